"""A night that starts before its window starts its first moves at once: each runs its
prechecks and waits, in its own run, for the window's start, so their copies begin at the start
instead of after a burst of run start-ups and prechecks inside the window."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hvmove import planner
from hvmove.planner import Limits, PlannedMove, Throughput, VolumeState, Window
from hvmove.store import Store
from tests.conftest import Lab

GiB = 1024**3


class _Recorder:
    """Stands for the night's launcher: what was started, and with which not_before."""

    def __init__(self) -> None:
        self.started: list[tuple[str, datetime | None]] = []

    def start(self, move_id: str, not_before: datetime | None = None) -> Any:
        self.started.append((move_id, not_before))
        return object()


def _schedule(now: datetime, start: datetime) -> tuple[planner.Schedule, dict[str, PlannedMove]]:
    vol = VolumeState(key="d", capacity=10_000 * GiB, free=9_000 * GiB, headroom_percent=10)
    src = VolumeState(key="s", capacity=10_000 * GiB, free=9_000 * GiB, headroom_percent=10)
    moves = [
        PlannedMove(
            id=f"hv01/{vm}",
            host="hv01",
            vm=vm,
            source_volumes=["s"],
            destination_volume="d",
            bytes=10 * GiB,
            throughput=Throughput(p50=500e6, p90=400e6),
        )
        for vm in ("a", "b")
    ]
    limits = Limits(hosts={"hv01": 2}, source_volume=4, destination_volume=4)
    win = Window(start=start, end=start + timedelta(hours=2))
    sched = planner.plan(moves, [vol, src], limits, win, now)
    return sched, {m.id: m for m in moves}


@pytest.fixture
def quiet_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import flows.nightly as nightly

    monkeypatch.setattr(nightly, "get_run_logger", lambda: logging.getLogger("test"))


@pytest.mark.usefixtures("quiet_logger")
def test_before_the_window_its_first_moves_start_now_and_wait_for_its_start() -> None:
    from flows.nightly import InFlight, _start_due

    now = datetime(2026, 3, 29, 0, 58, tzinfo=UTC)
    start = now + timedelta(minutes=2)
    sched, pending = _schedule(now, start)
    assert {m.start for m in sched.admitted} == {start}  # the plan starts both at the window
    run, flying = _Recorder(), {}
    _start_due(run, sched, now, start, pending, flying)  # type: ignore[arg-type]
    assert sorted(run.started) == [("hv01/a", start), ("hv01/b", start)]
    assert not pending
    f: InFlight = flying["hv01/a"]
    # planned from the window's start; its start-up is not one a move started later would have
    assert f.started == start and f.early


@pytest.mark.usefixtures("quiet_logger")
def test_inside_the_window_moves_start_without_waiting() -> None:
    from flows.nightly import _start_due

    start = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    now = start + timedelta(seconds=30)
    sched, pending = _schedule(now, start)
    run, flying = _Recorder(), {}
    _start_due(run, sched, now, start, pending, flying)  # type: ignore[arg-type]
    assert sorted(run.started) == [("hv01/a", None), ("hv01/b", None)]
    assert all(f.started == now and not f.early for f in flying.values())


@pytest.mark.slow
def test_a_held_move_prechecks_first_and_copies_from_not_before(prefect_api: str, lab: Lab) -> None:
    from flows.migrate_vm import migrate_vm

    web = lab.vm("web01")
    not_before = datetime.now(UTC) + timedelta(seconds=4)
    prechecked: list[datetime] = []

    def watch() -> None:  # when the prechecks' record says they passed
        store = Store(lab.config.store_url())
        while not prechecked:
            for r in store.moves():
                if store.step_states(r.id).get("prechecks") == "completed":
                    prechecked.append(datetime.now(UTC))
            threading.Event().wait(0.05)

    threading.Thread(target=watch, daemon=True).start()
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination="E:\\VMs\\web01",
        config=str(lab.dir / "hvmove.yaml"),
        poll_seconds=0.1,
        not_before=not_before,
        return_state=True,
    )
    assert state.is_completed(), state
    job = lab.server.engine.jobs_of(web.id)[0]
    began = datetime.fromtimestamp(job.started, UTC)
    assert prechecked and prechecked[0] < not_before <= began, (prechecked, not_before, began)


@pytest.mark.slow
def test_a_move_given_the_nights_probe_does_not_probe_again(prefect_api: str, lab: Lab) -> None:
    """Moves a night starts together would each probe their destination beside the others and
    record a shared figure, which later nights learn from as if it were the volume's."""
    from flows.migrate_vm import migrate_vm
    from flows.nightly import move_params

    before = len(lab.server.scripts.calls)
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination="E:\\VMs\\web01",
        config=str(lab.dir / "hvmove.yaml"),
        poll_seconds=0.1,
        measured_mbps=123.4,
        return_state=True,
    )
    assert state.is_completed(), state
    scripts = [c[1] for c in lab.server.scripts.calls[before:]]
    assert "Measure-Bandwidth" not in scripts and "Start-StorageMove" in scripts
    record = Store(lab.config.store_url()).moves()[0]
    assert record.measured_mbps == 123.4
    # and the night hands each move its own batch probe (bytes/s there, MB/s here)
    night_move = next(iter(_resolved(lab)))
    assert move_params(lab.config, night_move, "b", 1.0, None, 2.5e8)["measured_mbps"] == 250.0
    # a slow share stays above 0 (the parameter must be greater than 0): never rounded away
    assert move_params(lab.config, night_move, "b", 1.0, None, 4e4)["measured_mbps"] == 0.04
    assert "measured_mbps" not in move_params(lab.config, night_move, "b", 1.0)


def _resolved(lab: Lab) -> list[Any]:
    from hvmove import batch

    plan = lab.dir / "one.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: sql01, destination: 'F:\\VMs\\sql01'}\n")
    return batch.load_and_resolve(lab.config, plan, Store(lab.config.store_url()))[0]


def test_a_held_copy_looks_at_the_host_only_after_its_wait(tmp_path: Any) -> None:
    """What the copy step acts on is what the host says at not_before, not what it said before
    the wait: a job started or a VM moved meanwhile (by an admin, a rerun) is seen."""
    from hvmove import pipeline
    from hvmove.models import MoveRequest

    class Looked(Exception):
        pass

    looked: list[datetime] = []

    class Host:
        def move_status(self, vm_id: str) -> None:
            looked.append(datetime.now(UTC))
            raise Looked  # the first look at the host is all this test is about

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    request = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    record = store.open_move(
        host="hv01", vm_id="vm-1", vm_name="web01", request=request.model_dump()
    )
    not_before = datetime.now(UTC) + timedelta(seconds=0.3)
    with pytest.raises(Looked):
        pipeline.run_copy(Host(), store, record.id, request, not_before=not_before)  # type: ignore[arg-type]
    assert looked and looked[0] >= not_before
