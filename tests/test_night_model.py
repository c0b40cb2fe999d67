"""What the night's planner is told before and during a night: blocked versus deferred for space,
source volumes probed, the startup allowed before the first copy is seen, and re-learning from
what finished. Behaviour on cases whose right answer is known; no timings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hvmove import batch, learning, planner, throughput
from hvmove.planner import Limits, PlannedMove, Throughput, VolumeState, Window
from hvmove.store import Store

from .conftest import make_lab

GiB = 1024**3
MB = 1e6
START = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)


# -- blocked (never fits) versus deferred (not beside the others) ------------------------------
def _move(
    source: str,
    destination: str,
    *,
    odx: bool = False,
    size: int = GiB,
    p50: float = 1.0,
    p90: float = 1.0,
) -> PlannedMove:
    """One planned move of hv01 from ``source`` to ``destination`` (its rates: the planner's
    first guess, which the night model replaces)."""
    return PlannedMove(
        id="m",
        host="hv01",
        vm="m",
        source_volumes=[source],
        destination_volume=destination,
        bytes=size,
        throughput=Throughput(p50=p50, p90=p90),
        odx=odx,
    )


def _space_estate(estate) -> None:  # type: ignore[no-untyped-def]
    from hvmove.lab.build import add_vm

    for vol in estate.data.volumes:
        if vol.root == "F:\\" and vol.hosts == ["hv01"]:
            vol.capacity = 512 * GiB  # 460 GiB above its 10 % headroom
    add_vm(estate, "hv01", "big01", disks=[(500 * GiB, 1.0, "Fixed")])
    add_vm(estate, "hv01", "half01", disks=[(250 * GiB, 1.0, "Fixed")])
    add_vm(estate, "hv01", "half02", disks=[(250 * GiB, 1.0, "Fixed")])


def test_a_move_that_cannot_fit_even_alone_is_blocked_one_that_fits_alone_is_deferred(
    tmp_path: Path,
) -> None:
    lab = make_lab(tmp_path, populate=_space_estate, max_moves=4)
    try:
        store = Store(lab.config.store_url())
        plan = tmp_path / "night.yaml"
        plan.write_text(
            "moves:\n"
            + "".join(
                f"  - {{host: hv01, vm: {vm}, destination: 'F:\\VMs\\{vm}'}}\n"
                for vm in ("big01", "half01", "half02")
            )
        )
        moves, inventories = batch.load_and_resolve(lab.config, plan, store)
        reports = batch.precheck_all(lab.config, moves, reserve=False, store=store)
        night = batch.night_inputs(lab.config, moves, reports, inventories, store)
        names = {batch.move_id(m): m.vm.name for m in moves}
        # 500 GiB cannot fit F: with its headroom whatever else moves tonight: an admin's
        # problem, said once, not a deferral repeated every night
        assert [names[m] for m in night.blocked] == ["big01"]
        assert "space" in next(iter(night.blocked.values()))
        # each half fits alone; both do not: one runs, the other waits for another night
        assert night.limits is not None
        window = Window(start=START, end=START + timedelta(hours=8))
        sched = planner.plan(
            night.moves, night.volumes, night.limits, window, START, bandwidth=night.bandwidth
        )
        assert len(sched.admitted) == 1
        assert [(names[d.id], d.reason) for d in sched.deferred] in (
            [("half01", "space")],
            [("half02", "space")],
        )
    finally:
        lab.server.stop()


# -- source volumes --------------------------------------------------------------------------------
class _Probe:
    def __init__(self, mbps: float) -> None:
        self.write_mbps = self.read_mbps = mbps


class _Client:
    def __init__(self) -> None:
        self.probed: list[str] = []

    def bandwidth(self, folder: str, size_mib: int) -> _Probe:
        self.probed.append(folder)
        return _Probe(120.0)


def test_source_volumes_no_destination_measured_are_probed_once(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    try:
        store = Store(lab.config.store_url())
        plan = tmp_path / "night.yaml"
        plan.write_text(
            "moves:\n"
            "  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n"
            "  - {host: hv01, vm: sql01, destination: 'E:\\VMs\\sql01'}\n"
        )
        moves, _ = batch.load_and_resolve(lab.config, plan, store)
        reports = batch.precheck_all(lab.config, moves, reserve=False, store=store)
        assert all(r.source_mbps for r in reports)  # the planner's prechecks probe D: too
        src = reports[0].source_volume
        assert src == reports[1].source_volume and src != reports[0].destination_volume
        # one probe for the two moves sharing D:, none for a volume a destination probe measured
        for r in reports:
            r.source_mbps = None
        fake = _Client()
        batch.probe_sources(lab.config, moves, reports, {"hv01": fake})
        assert len(fake.probed) == 1 and all(r.source_mbps == 120.0 for r in reports)
        reports[0].destination_volume = src
        reports[0].mbps = 300.0
        fake = _Client()
        batch.probe_sources(lab.config, moves, reports, {"hv01": fake})
        assert fake.probed == []
    finally:
        lab.server.stop()


def test_a_copy_from_a_slower_source_is_planned_at_the_source_pace() -> None:
    move = _move("src", "dst")
    history = [
        throughput.Observation("x", "y", False, int(90 * MB * 100), 100.0, probe_rate=100 * MB)
        for _ in range(3)
    ]  # host copies ran at 0.9 of what their volumes allow
    model = learning.night_model(history, [move], {"dst": 400 * MB, "src": 100 * MB})
    est = model.planned(move, 400 * MB, 1.0).throughput
    assert est.p50 == pytest.approx(90 * MB)  # 0.9 of the source's 100, not of the 400 probe
    # the two volumes are the copy's shared resources, with their probed capacities
    assert model.bandwidth["vol:src"] == pytest.approx(100 * MB)


def test_a_class_ratio_is_taken_over_the_nominal_it_is_applied_to() -> None:
    """Past host copies from a slow source ran at 0.9 of that source (90 MB/s beside a 400 MB/s
    destination probe). Tonight's move from a fast source to a 400 MB/s destination runs at
    about 0.9 x 400: its ratio is over the slower volume, as ``nominal`` applies it, not over
    the destination probe (0.225, which counted the slow source twice)."""
    history = [
        throughput.Observation("slow", "d1", False, int(90 * MB * 100), 100.0, probe_rate=400 * MB)
        for _ in range(3)
    ]
    move = _move("fast", "d2")
    probes = {"slow": 100 * MB, "fast": 400 * MB, "d1": 400 * MB, "d2": 400 * MB}
    model = learning.night_model(history, [move], probes)
    est = model.planned(move, 400 * MB, 1.0).throughput
    assert est.p50 == pytest.approx(360 * MB)


def test_a_shared_copy_corrected_for_concurrency_is_never_faster_than_its_slower_volume() -> None:
    """Three copies a->b that each shared their volumes with two others ran at 60 MB/s: times
    three, 180 MB/s alone, but a is a 100 MB/s volume (the busy side was b). A pair estimate of
    180 planned tonight's a->b copy 1.8x too fast, past its P90."""
    tonight = [
        throughput.Observation("a", "b", False, int(60 * MB * 100), 100.0, 3.0, 400 * MB)
        for _ in range(3)
    ]
    est = throughput.Learner(tonight, {"a": 100 * MB, "b": 400 * MB}).estimate(
        "a", "b", False, 100 * MB, 1.0
    )
    assert est.source == "pair" and est.p50 == pytest.approx(100 * MB)


def test_an_offload_engine_is_never_taken_for_more_than_a_copy_got_from_it() -> None:
    """ODX copies a->b that ran at 300 MB/s each while three copies shared their volumes (host
    copies among them, which do not use the engine): the engine gave a copy 300 MB/s, which is
    all it is known to give. Times three it was planned at 900 MB/s, seven ODX copies were
    admitted beside each other on it, and each ran at a seventh of the truth, past its P90."""
    history = [
        throughput.Observation("a", "b", True, int(300 * MB * 100), 100.0, 3.0, 100 * MB)
        for _ in range(3)
    ]
    move = _move("a", "b", odx=True)
    model = learning.night_model(history, [move], {"b": 100 * MB})
    [engine] = [r for r in model.bandwidth if r.startswith("odx:")]
    assert model.bandwidth[engine] == pytest.approx(300 * MB)


# -- learning during the night ---------------------------------------------------------------------
def test_copies_that_shared_their_volumes_teach_a_class_without_history() -> None:
    # no ODX copy ran alone yet: tonight's ODX copies, each beside others, ran at 5x and 6x
    # their probe; their rates as observed (never the concurrency-corrected ones) are the
    # class ratio, instead of planning ODX at the probe's pace
    tonight = [
        throughput.Observation("a", "b", True, int(r * MB * 100), 100.0, 2.0, 100 * MB)
        for r in (500, 600, 600)
    ]
    learner = throughput.Learner(tonight)
    est = learner.estimate("p", "q", True, 100 * MB, 1.0)
    assert est.source == "class" and est.p50 == pytest.approx(600 * MB)
    # copies that ran alone win as soon as there are enough of them
    alone = [
        throughput.Observation("a", "b", True, int(300 * MB * 100), 100.0, 1.0, 100 * MB)
        for _ in range(3)
    ]
    assert throughput.Learner(tonight + alone).estimate(
        "p", "q", True, 100 * MB, 1.0
    ).p50 == pytest.approx(300 * MB)


def test_a_finish_relearned_changes_the_next_admission(tmp_path: Path) -> None:
    """Re-planning after a finish uses what it showed: a move the probe alone made too slow for
    the window is admitted once the night has seen copies of its class run fast."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    move = _move("hv01|c:\\", "hv01|d:\\", odx=True, size=50 * GiB, p50=100 * MB, p90=70 * MB)
    night = batch.NightInputs(moves=[move], probes={"m": 100 * MB})
    volumes = [VolumeState(key=k, capacity=10**13, free=10**13) for k in move.source_volumes]
    volumes.append(VolumeState(key=move.destination_volume, capacity=10**13, free=10**13))
    limits = Limits(hosts={"hv01": 4})
    window = Window(start=START, end=START + timedelta(seconds=300))

    def admitted() -> int:
        batch.relearn(night, store, {"hv01|d:\\": 100 * MB})
        sched = planner.plan(night.moves, volumes, limits, window, START, bandwidth=night.bandwidth)
        return len(sched.admitted)

    assert admitted() == 0  # 50 GiB at the probe's pessimistic 70 MB/s: 767 s > 300 s
    for n in range(3):  # tonight's ODX copies elsewhere ran at 4x their probe
        rec = store.open_move(host="hv02", vm_id=f"o{n}", vm_name=f"o{n}", request={"n": n})
        store.update(
            rec.id,
            source_volume="hv02|c:\\",
            destination_volume="hv02|d:\\",
            bytes_total=400 * 10**6 * 10,
            copy_seconds=10.0,
            measured_mbps=100.0,
            odx=True,
            status="completed",
        )
    assert admitted() == 1


# -- startup ---------------------------------------------------------------------------------------
def test_the_first_plan_allows_a_startup_before_any_copy_is_seen() -> None:
    # prechecks of 40 moves took 20 s: 0.5 s each; 8 slots start side by side at first
    prior = learning.startup_prior(20.0, 40, 8)
    assert prior == pytest.approx(4.0)
    # one in ten start-ups may take longer: nothing says how much yet, so twice as long
    assert learning.startup_allowance([], prior) == (prior, 2 * prior)
    # then what the night saw: the typical start-up and the slowest of few, or twice the typical
    assert learning.startup_allowance([1.0, 2.0, 6.0], prior) == (2.0, 6.0)
    assert learning.startup_allowance([1.0, 1.1], prior) == (1.05, 2.1)
    many = [0.5] * 6 + [0.8] * 6 + [3.0] * 6 + [9.0] * 2
    # the exclusive 90th percentile of 20: between the 18th and 19th slowest (3.0 + 0.9 x 6)
    assert learning.startup_allowance(many, prior) == (pytest.approx(0.8), pytest.approx(8.4))
    # the latest start-ups count, not the night's first quick ones
    later = [0.2] * 30 + many
    assert learning.startup_allowance(later, prior) == learning.startup_allowance(many, prior)
    assert learning.startup_prior(20.0, 0, 8) == 0.0
    assert math.isclose(learning.startup_prior(3.0, 2, 8), 3.0)  # never more than the moves


def test_the_nights_first_schedule_allows_the_prior_before_each_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvmove import planning

    lab = make_lab(tmp_path)
    try:
        store = Store(lab.config.store_url())
        plan = tmp_path / "night.yaml"
        plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n")
        clock = iter([100.0, 112.0])  # the prechecks of the night's one move took 12 s
        monkeypatch.setattr(planning, "monotonic", lambda: next(clock))
        night = planning.prepare(lab.config, plan, store, now=START, window_text="now+600")
        assert night.startup_prior == pytest.approx(12.0)
        [move] = night.schedule.admitted
        copy = move.bytes / move.rate_p90
        # the prior start-up, and one in ten twice as long (its spread, combined with the copy's)
        p50 = (move.finish_p50 - move.start).total_seconds() - 12.0
        slow = 12.0 + p50 + math.hypot(12.0, copy - p50)
        assert (move.finish_p90 - move.start).total_seconds() == pytest.approx(slow)
    finally:
        lab.server.stop()


def _blocked_probe_estate(estate) -> None:  # type: ignore[no-untyped-def]
    from hvmove.lab.build import add_vm

    for vol in estate.data.volumes:
        if vol.root == "E:\\" and vol.hosts == ["hv01"]:
            vol.capacity = 512 * GiB
    add_vm(estate, "hv01", "big01", disks=[(500 * GiB, 1.0, "Fixed")])  # to E:, cannot fit
    add_vm(estate, "hv01", "from01", disks=[(40 * GiB, 1.0, "Fixed")], root="E:\\VMs")


def test_a_blocked_moves_probe_still_measures_a_volume_others_copy_from(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, populate=_blocked_probe_estate)
    try:
        store = Store(lab.config.store_url())
        plan = tmp_path / "night.yaml"
        plan.write_text(
            "moves:\n"
            "  - {host: hv01, vm: big01, destination: 'E:\\VMs\\big01'}\n"
            "  - {host: hv01, vm: from01, destination: 'F:\\VMs\\from01'}\n"
        )
        moves, inventories = batch.load_and_resolve(lab.config, plan, store)
        reports = batch.precheck_all(lab.config, moves, reserve=False, store=store)
        night = batch.night_inputs(lab.config, moves, reports, inventories, store)
        assert len(night.blocked) == 1 and len(night.moves) == 1
        # E: was measured by big01's probe (so not probed again as from01's source): its
        # bandwidth bounds from01's copy although big01 is blocked
        source = night.moves[0].source_volumes[0]
        assert f"vol:{source}" in night.bandwidth and f"vol:{source}" in night.moves[0].shares
    finally:
        lab.server.stop()
