"""What a running copy still holds when the night re-plans: a copy ahead of its plan needs less than
its planned rate to keep its P90 finish, and a copy that is over (verification and cleanup left)
holds only its VM and its space; the store tells the night which copies are tonight's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hvmove.planner import Limits, PlannedMove, RunningMove, VolumeState, Window, plan
from hvmove.store import Store
from tests.test_throughput import shared_move  # a move sharing D: alone at its rate

GiB = 1024**3
MB = 1000**2
START = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)


def _running(**kw: object) -> RunningMove:
    fields: dict[str, object] = {
        "id": "r",
        "host": "hv01",
        "vm": "r",
        "source_volumes": ["S"],
        "destination_volume": "D",
        "expected_finish": START + timedelta(seconds=100),
        "shares": ["vol:D"],
        "rate": 100 * MB,  # planned alone on D: (100 MB/s): the whole volume
    }
    return RunningMove(**(fields | kw))


def _plan(moves: list[PlannedMove], running: RunningMove, now: datetime, **limits: object):
    volumes = [VolumeState(key=k, capacity=10**15, free=10**15) for k in ("S", "D")]
    lim = Limits(**({"hosts": {"hv01": 4, "hv02": 4}} | limits))
    window = Window(start=START, end=START + timedelta(seconds=600))
    return plan(moves, volumes, lim, window, now, running=[running], bandwidth={"vol:D": 100 * MB})


def _start(sched, id: str) -> float:  # type: ignore[no-untyped-def]
    return next((m.start - START).total_seconds() for m in sched.admitted if m.id == id)


def test_a_copy_ahead_of_its_plan_leaves_the_rest_of_its_rate_to_a_new_move() -> None:
    now = START + timedelta(seconds=50)
    new = shared_move("a", 1, rate_mb=30, host="hv02")
    # planned at the whole of D: until its P90 finish: nothing may share D: before then
    assert _start(_plan([new], _running(), now), "a") == 100
    # half-way through its time with 1 GiB left, it needs ~21 MB/s to keep its finish: two
    # copies on D: each get 50 MB/s at worst, so the new one starts now
    ahead = _plan([new], _running(bytes_left=1 * GiB), now)
    assert _start(ahead, "a") == 50
    # behind its plan it keeps its whole planned rate (never more)
    behind = _plan([new], _running(bytes_left=9 * GiB), now)
    assert _start(behind, "a") == 100


def test_a_copy_that_is_over_holds_no_slot_and_no_bandwidth_but_keeps_its_space() -> None:
    now = START + timedelta(seconds=50)
    new = shared_move("a", 1, rate_mb=30)
    one_slot = {"hosts": {"hv01": 1}}
    assert _start(_plan([new], _running(), now, **one_slot), "a") == 100
    over = _running(copied=True, reserved_bytes=10 * GiB)
    assert _start(_plan([new], over, now, **one_slot), "a") == 50
    # its bytes on D: are its own until its run ends: a volume with room for one move only
    volumes = [VolumeState(key="S", capacity=10**15, free=10**15)]
    volumes.append(VolumeState(key="D", capacity=100 * GiB, free=15 * GiB, headroom_percent=0))
    window = Window(start=START, end=START + timedelta(seconds=600))

    def beside(running: RunningMove):  # type: ignore[no-untyped-def]
        move = shared_move("b", 8, rate_mb=30)
        limits = Limits(hosts={"hv01": 1})
        bw = {"vol:D": 100 * MB}
        return plan([move], volumes, limits, window, now, running=[running], bandwidth=bw)

    assert [d.reason for d in beside(over).deferred] == ["space"]
    assert [m.id for m in beside(_running(copied=True)).admitted] == ["b"]  # 15 GiB free


def _record(store: Store, vm_id: str, batch: str) -> str:
    request = {"host": "HV01", "vm": vm_id, "mode": "all", "destination": f"D:\\{batch}"}
    return store.open_move(host="HV01", vm_id=vm_id, vm_name=vm_id, request=request, batch=batch).id


def test_the_store_gives_the_night_only_its_own_copies(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    # last night's move of the same VM: its copy began and ended long ago
    old = _record(store, "vm-1", "night-1")
    store.step_started(old, "copy")
    store.add_sample(old, 100, 10 * GiB, 100.0)
    store.step_ended(old, "copy", "completed")
    store.finish(old, "completed")
    assert store.night_copies("night-2") == {}  # tonight's run has not opened its record yet

    mine = _record(store, "vm-1", "night-2")
    assert store.night_copies("night-2")[("hv01", "vm-1")].began is None
    store.step_started(mine, "copy")
    store.add_sample(mine, 10, 1 * GiB, 100.0)
    store.add_sample(mine, 40, 4 * GiB, 100.0)
    copy = store.night_copies("night-2")[("hv01", "vm-1")]
    assert copy.began is not None and not copy.over and copy.percent == 40
    store.step_ended(mine, "copy", "completed")
    assert store.night_copies("night-2")[("hv01", "vm-1")].over
    # a copy step begun again (a resumed move) is running again
    store.step_started(mine, "copy")
    assert not store.night_copies("night-2")[("hv01", "vm-1")].over


def test_the_night_wakes_when_a_copy_of_its_own_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's end frees its share a second or more before its run ends (cutover, verification,
    cleanup): the night re-plans then, not at its next poll."""
    from flows import nightly

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    old = _record(store, "vm-1", "night-1")
    store.step_started(old, "copy")
    store.step_ended(old, "copy", "completed")
    mine = _record(store, "vm-2", "night-2")
    store.step_started(mine, "copy")
    assert store.copies_over("night-2") == 0  # last night's copies are not tonight's
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:  # the copy ends while the night waits
            store.step_ended(mine, "copy", "completed")
        # fail at once rather than spin to the hour's timeout when the wake is broken
        assert len(naps) < 10, "the night kept waiting after its copy ended"

    class Running:
        def done(self) -> bool:
            return False

    monkeypatch.setattr(nightly.time, "sleep", nap)
    before = store.copies_over("night-2")
    nightly._wait_any([Running()], 3600, lambda: store.copies_over("night-2") != before)  # type: ignore[list-item]
    assert len(naps) == 3 and store.copies_over("night-2") == 1


@pytest.mark.parametrize("percent, left", [(None, None), (0, 1000), (37, 630), (100, 0)])
def test_the_night_reads_bytes_left_from_whole_percents(percent: int | None, left: int | None):
    from flows.nightly import InFlight, _running  # Prefect loads only here
    from hvmove.store import CopyProgress

    move = shared_move("a", 1, rate_mb=30).model_copy(update={"bytes": 1000})
    f = InFlight(move, START, START + timedelta(seconds=60), job=None, rate=30 * MB)  # type: ignore[arg-type]
    running = _running(f, CopyProgress(began=START, percent=percent))
    assert running.bytes_left == left and not running.copied
    assert _running(f, CopyProgress(began=START, over=True)).copied
    assert _running(f, None).bytes_left is None
