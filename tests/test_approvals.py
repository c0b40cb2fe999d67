"""The approval gate's library side: config rules, which moves wait, which an answer approves."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import approvals
from hvmove.config import load
from hvmove.errors import ConfigError
from hvmove.store import Store

HOSTS = "hosts:\n  - {name: hv01, address: hv01.corp.example, username: u, password: {env: P}}\n"


def test_cleanup_approve_needs_the_source_kept(tmp_path: Path) -> None:
    f = tmp_path / "hvmove.yaml"
    f.write_text(HOSTS + "cleanup: approve\n")
    assert load(f).cleanup == "approve"
    f.write_text(HOSTS + "cleanup: approve\ndefaults: {keep_source_until_verified: false}\n")
    with pytest.raises(ConfigError, match=r"needs 'defaults\.keep_source_until_verified: true'"):
        load(f)
    f.write_text(HOSTS + "cleanup: later\n")
    with pytest.raises(ConfigError, match="cleanup"):
        load(f)


def _move(store: Store, vm: str, verified: bool) -> str:
    r = store.open_move(
        host="hv01", vm_id=f"id-{vm}", vm_name=vm, request={"vm": vm, "destination": "E:\\"}
    )
    store.update(r.id, verified=verified, before={"vhds": {f"D:\\{vm}.vhdx": f"E:\\{vm}.vhdx"}})
    return r.id


def test_only_verified_moves_wait_and_only_ticked_ones_are_approved(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    a, b, c = (_move(store, vm, verified=vm != "c'[x]") for vm in ("a", "b", "c'[x]"))
    approvals.hold(store, a)
    approvals.hold(store, b)
    with pytest.raises(ValueError, match="not verified"):
        approvals.hold(store, c)  # never past an unverified destination
    waiting = approvals.awaiting(store)
    assert [r.id for r in waiting] == [a, b]
    assert store.get(a).status == "verified" and store.get(a).reason == approvals.REASON
    assert approvals.rows(waiting)[0]["source files to delete"] == "D:\\a.vhdx"
    tick_b = {approvals.field_name(b): True, approvals.field_name(a): False}
    assert [r.id for r in approvals.approved(waiting, tick_b)] == [b]
    assert [r.id for r in approvals.approved(waiting, {approvals.APPROVE_ALL: True})] == [a, b]
    assert approvals.approved(waiting, {}) == []
    assert approvals.field_name(a).isidentifier()


def test_a_move_awaiting_approval_counts_as_moved_in_the_night() -> None:
    from hvmove import reports

    row = {"vm": "a", "host": "hv01", "bytes": 1, "copy_seconds": 1.0}
    summary = reports.night_summary(
        window=("22:00", "05:00"),
        results=[{**row, "status": "verified", "reason": approvals.REASON}],
        deferred=[],
        blocked=[],
        already_done=[],
        planned_makespan_s=None,
    )
    assert [m["vm"] for m in summary["moved"]] == ["a"] and not summary["failed"]
    assert "awaiting cleanup approval" in reports.night_markdown(summary, "night-1")
    assert reports.night_verdict(summary).kind == "completed"
