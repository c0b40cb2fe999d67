"""A cancel Hyper-V refuses (issue 10 #11): Stop-StorageMove says `requested` only when
RequestStateChange(4) returned 0 or 4096, and hvmove's cancel reports the refusal as one.

RequestStateChange may answer 32775 "Invalid state for this operation"
(learn.microsoft.com/windows/win32/hyperv_v2/requeststatechange-msvm-migrationjob, return values
as listed for GetError) and Cancellable "does not guarantee the cancel succeeds"
(msvm-migrationjob). The lab's `refuse_stop` engine fault makes a job refuse.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hvmove import cancel, prechecks
from hvmove.models import MoveRequest
from hvmove.moves import follow
from hvmove.store import Store
from tests.conftest import Lab, make_lab
from tests.test_scripts_static import SCRIPTS, _text, parse, walk

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)


# --- the script: `requested` comes from the WMI method's ReturnValue -------------------------
def _assignments(root, name: str):
    for node in walk(root):
        if node.type != "assignment_expression":
            continue
        left = node.child_by_field_name("left") or node.children[0]
        if _text(left).strip().lower() == f"${name.lower()}":
            yield node, node.child_by_field_name("value") or node.children[-1]


def requested_problems(text: str) -> list[str]:
    """Why the script's `requested` would not be the WMI method's outcome: it must start
    $false and be set only from comparisons of a variable holding `.ReturnValue` with exactly
    0 and 4096 (the codes that mean Hyper-V took the request), and be what the output says."""
    root = parse(text).root_node
    returns = {
        _text(left_var).strip().lower()
        for node in walk(root)
        if node.type == "assignment_expression" and ".returnvalue" in _text(node).lower()
        for left_var in [node.children[0]]
    }
    problems: list[str] = []
    found = list(_assignments(root, "requested"))
    if not found:
        return ["$requested is never assigned"]
    first = _text(found[0][1]).strip().lower()
    if first != "$false":
        problems.append(f"$requested starts as {first!r}, not $false")
    for _node, value in found[1:]:
        comparisons = [n for n in walk(value) if n.type == "comparison_expression"]
        codes: set[int] = set()
        for comp in comparisons:
            parts = [_text(c).strip() for c in comp.children]
            if len(parts) != 3 or parts[1].lower() != "-eq" or parts[0].lower() not in returns:
                problems.append(f"$requested = {_text(value)!r}: not ReturnValue -eq a code")
                continue
            codes.add(int(parts[2]))
        if not comparisons:
            problems.append(f"$requested = {_text(value)!r} does not look at the ReturnValue")
        elif codes and codes != {0, 4096}:
            problems.append(f"$requested is true for return codes {sorted(codes)}, not 0 / 4096")
    if not any(
        _text(n).replace(" ", "").lower() == "requested=$requested"
        for n in walk(root)
        if n.type == "hash_entry"
    ):
        problems.append("the output's requested is not $requested")
    return problems


def test_stop_storage_move_reports_requested_from_the_return_value() -> None:
    text = (SCRIPTS / "Stop-StorageMove.ps1").read_text(encoding="utf-8")
    assert requested_problems(text) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # the old script: requested whatever Hyper-V answered
        (
            "$requested = ($returnValue -eq 0 -or $returnValue -eq 4096)",
            "$requested = $true",
        ),
        ("$returnValue -eq 4096)", "$returnValue -eq 32775)"),
        ("$requested = ($returnValue", "$requested = ($other"),
        ("requested    = $requested", "requested    = $true"),
    ],
)
def test_the_requested_check_flags_an_unconditional_or_wrong_outcome(old: str, new: str) -> None:
    text = (SCRIPTS / "Stop-StorageMove.ps1").read_text(encoding="utf-8")
    assert old in text
    assert requested_problems(text.replace(old, new)) != []


# --- the lab and hvmove's own cancel ----------------------------------------------------------
@pytest.fixture
def slow(tmp_path: Path):
    """A lab slow enough that a move is still copying when it is cancelled."""
    lab = make_lab(tmp_path, rate_scale=2.0)
    yield lab
    lab.server.stop()


def _started(lab: Lab, client, store: Store) -> str:
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    vm = lab.vm("web01")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    start = client.start_move(vm.id, "all", destination=req.destination)
    assert start.status == "started" and start.job is not None
    store.update(move_id, job_id=start.job.job_id)
    return move_id


def test_a_refused_cancel_is_reported_as_refused_and_the_move_goes_on(
    slow: Lab, tmp_path: Path
) -> None:
    # Cancellable still true when hvmove looks: the refusal comes from RequestStateChange itself
    slow.server.engine.inject({"kind": "refuse_stop", "vm": "web01", "cancellable": True})
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with slow.client() as client:
        move_id = _started(slow, client, store)
        vm_id = slow.vm("web01").id
        stop = client.stop_move(vm_id)
        assert (stop.requested, stop.return_value) == (False, 32775)
        done = cancel.stop_move(client, store, move_id, "operator cancelled", wait_s=2.0)
        assert done.outcome == "left_to_finish", done
        assert "refused" in done.detail and "32775" in done.detail, done.detail
        record = store.get(move_id)
        assert record.status != "cancelled" and record.reason != "operator cancelled"
        # Hyper-V went on: the VM switches to the destination, nothing of it was removed
        slow.server.control("settings", {"rate_scale": 40.0})
        job = follow(client, vm_id, poll_s=0.05, timeout_s=60)
        assert job is not None and job.job_state == "Completed"
        assert all(p.startswith("E:\\VMs\\web01") for p in client.vm_paths(vm_id).disk_paths)


def test_past_the_point_of_no_return_the_job_says_so_and_stop_is_not_sent(
    slow: Lab, tmp_path: Path
) -> None:
    slow.server.engine.inject({"kind": "refuse_stop", "vm": "web01"})
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with slow.client() as client:
        move_id = _started(slow, client, store)
        vm_id = slow.vm("web01").id
        assert client.move_status(vm_id).job.cancellable is False
        stops = sum(1 for c in slow.server.scripts.calls if c[1] == "Stop-StorageMove")
        done = cancel.stop_move(client, store, move_id, "operator cancelled", wait_s=2.0)
        assert done.outcome == "left_to_finish" and "no longer accepts" in done.detail
        assert sum(1 for c in slow.server.scripts.calls if c[1] == "Stop-StorageMove") == stops
        assert client.move_status(vm_id).job.running
        slow.server.control("settings", {"rate_scale": 40.0})
        follow(client, vm_id, poll_s=0.05, timeout_s=60)


def test_the_overrun_guard_says_when_hyper_v_refused(slow: Lab, tmp_path: Path) -> None:
    slow.server.engine.inject({"kind": "refuse_stop", "vm": "web01", "cancellable": True})
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    guard = cancel.OverrunGuard(slow.config)
    try:
        with slow.client() as client:
            _started(slow, client, store)
            vm_id = slow.vm("web01").id
            deadline = time.monotonic() + 30
            while client.move_status(vm_id).job.percent_complete < 1:
                assert time.monotonic() < deadline, "the copy never progressed"
                time.sleep(0.05)
            now = datetime.now(UTC)
            line = guard.check("hv01", vm_id, "web01", now + timedelta(seconds=0.001), now)
            assert line is not None and line.startswith("could not cancel web01"), line
            assert "32775" in line
            assert client.move_status(vm_id).job.running
            slow.server.control("settings", {"rate_scale": 40.0})
            follow(client, vm_id, poll_s=0.05, timeout_s=60)
    finally:
        guard.close()
