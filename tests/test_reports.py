"""The night's verdict and report are pure functions of its summary: a failed move fails the
night, moves that waited name the Completed state, and `hvmove migrate` exits 0 / 2 / 1."""

from __future__ import annotations

from hvmove.reports import night_markdown, night_summary, night_verdict


def _summary(**rows: list[dict]) -> dict:
    results = [
        {"vm": "web01", "host": "hv01", "status": "completed", "bytes": 2**30, "copy_seconds": 4.0}
    ]
    results += rows.get("results", [])
    return night_summary(
        window=("2026-12-01T22:00:00+01:00", "2026-12-02T05:00:00+01:00"),
        results=results,
        deferred=rows.get("deferred", []),
        blocked=rows.get("blocked", []),
        already_done=[],
        planned_makespan_s=10.0,
        error=rows.get("error"),  # type: ignore[arg-type]
    )


def test_all_moved_is_plain_completed() -> None:
    v = night_verdict(_summary())
    assert (v.kind, v.name, v.exit_code) == ("completed", "Completed", 0)


def test_blocked_and_deferred_name_the_completed_state() -> None:
    s = _summary(
        blocked=[{"vm": "iso01", "host": "hv01", "reason": "attached ISO"}],
        deferred=[
            {"vm": "sql01", "host": "hv01", "reason": "window"},
            {"vm": "db02", "host": "hv02", "reason": "window"},
        ],
    )
    v = night_verdict(s)
    assert (v.kind, v.name, v.exit_code) == ("completed", "Completed with 1 blocked, 2 deferred", 2)
    report = night_markdown(s, "night-20261201T2100")
    assert "**Completed with 1 blocked, 2 deferred**" in report
    assert "- **iso01** on hv01: attached ISO" in report


def test_any_failed_move_fails_the_night_with_counts() -> None:
    failed = {"vm": "dc01", "host": "hv02", "status": "failed", "reason": "copy: host silent"}
    cancelled = {"vm": "app01", "host": "hv01", "status": "cancelled", "reason": "by ops"}
    s = _summary(results=[failed, cancelled], blocked=[{"vm": "x", "host": "h", "reason": "r"}])
    v = night_verdict(s)
    assert (v.kind, v.exit_code) == ("failed", 1)
    assert v.message.startswith("1 move(s) failed (dc01 on hv02)")
    assert "1 moved" in v.message and "1 blocked" in v.message and "1 cancelled" in v.message
    assert [m["vm"] for m in s["cancelled"]] == ["app01"]  # a cancel is not a failure


def test_a_crashed_night_is_failed_and_still_reported() -> None:
    s = _summary(error="HostUnreachable: hv01")
    v = night_verdict(s)
    assert (v.kind, v.exit_code) == ("failed", 1) and "the night stopped" in v.message
    assert "HostUnreachable: hv01" in night_markdown(s, "night-x")
