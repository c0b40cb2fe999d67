"""The night of ``benchmarks/night.py`` without servers: the same estate, history and planner
inputs, the planner re-planning after every finish, and the lab's own fluid model
(``hvmove.throughput.fair_share`` with each copy's drawn efficiency) deciding when copies end.
Seconds instead of minutes, so a planner change can be judged on many seeds before the real
(time-scaled, load-sensitive) night is run. It leaves out what only the real night has: the
orchestration between a move's start and its copy (``--startup`` stands for it) and the load.

    python benchmarks/night_sim.py [--seeds 1-5] [--startup 3] [-v]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import night_estate  # noqa: E402

from hvmove import batch, learning, planner, throughput  # noqa: E402
from hvmove.lab.estate import Estate, LabVolume  # noqa: E402
from hvmove.paths import volume_key  # noqa: E402
from hvmove.store import Store  # noqa: E402

ORACLE = False
SOURCE_PROBES = True
START = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def key(estate: Estate, vol: LabVolume, host: str) -> str:
    cluster = estate.host(host).cluster_name
    return volume_key(vol.root, kind=vol.kind, host=host, cluster=cluster)


@dataclass
class Fly:
    move: planner.PlannedMove
    copy: throughput.Copy
    started: float
    copy_at: float
    p50_end: float
    p90_end: float
    rate: float
    done: float = 0.0
    end: float | None = None
    shared: list[float] = field(default_factory=list)  # copies sharing its volumes, per step


def inputs(
    lab: Path, seed: int, minutes: int, host_limit: int
) -> tuple[Estate, batch.NightInputs, dict[str, throughput.Copy], Store]:
    estate, moves = night_estate.build(lab, seed, minutes, host_limit)
    store = Store(f"sqlite:///{lab / 'store.db'}")
    from hvmove.lab.history import generate_history

    generate_history(store.url, days=30, seed=seed, lab_estate=estate)
    routes = [(m.vm_id, *night_estate.route_of(estate, m)) for m in moves]
    copies, _caps = night_estate._resources(estate, routes)
    out = batch.NightInputs()
    truth: dict[str, throughput.Copy] = {}
    probes: dict[str, float] = {}
    vols: dict[str, planner.VolumeState] = {}
    for m, (_id, src, dst), c in zip(moves, routes, copies, strict=True):
        sk, dk = key(estate, src, m.host), key(estate, dst, m.host)
        for k, v in ((sk, src), (dk, dst)):
            vols[k] = planner.VolumeState(
                key=k, capacity=v.capacity, free=estate.free_bytes(v), headroom_percent=10
            )
        probes[dk] = estate.bandwidth(dst)  # a probe alone: the destination's bandwidth
        odx = c.resources[0].startswith("odx:")
        mid = f"{m.host}/{m.vm_id}"
        out.probes[mid] = probes[dk]
        out.moves.append(
            planner.PlannedMove(
                id=mid,
                host=m.host,
                vm=m.vm,
                source_volumes=[sk],
                destination_volume=dk,
                bytes=m.bytes,
                throughput=planner.Throughput.from_samples([probes[dk]]),
                odx=odx,
            )
        )
        truth[mid] = throughput.Copy(mid, c.demand, c.resources)
    if SOURCE_PROBES:  # what batch.probe_sources measures for the sources no destination did
        for m, (_id, src, _dst) in zip(moves, routes, strict=True):
            probes.setdefault(key(estate, src, m.host), estate.bandwidth(src))
    out.volumes = list(vols.values())
    for v in out.volumes:
        if v.key in probes:
            out.volumes[out.volumes.index(v)] = v.model_copy(
                update={"write_bandwidth": probes[v.key]}
            )
    batch.relearn(out, store, probes)
    if ORACLE:  # the planner told the truth: each copy's rate alone and the lab's capacities
        from hvmove.lab import bandwidth

        out.moves = [
            m.model_copy(
                update={
                    "throughput": planner.Throughput(
                        p50=truth[m.id].demand, p90=truth[m.id].demand
                    ),
                    "shares": list(truth[m.id].resources),
                }
            )
            for m in out.moves
        ]
        out.bandwidth = bandwidth.Fabric(estate).capacity()
    out.limits = planner.Limits(
        hosts={h.name: host_limit for h in estate.data.hosts},
        source_volume=8,
        destination_volume=8,
    )
    return estate, out, truth, store


def simulate(args: argparse.Namespace, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp)
        estate, inp, truth, store = inputs(lab, seed, args.minutes, args.host_limit)
        window_s = args.minutes * 60
        moves = [m for m in night_estate.build(lab / "b", seed, args.minutes, args.host_limit)[1]]
        bound, lp, _ = night_estate.bound(estate, moves, window_s)
        caps = _caps(estate)
        result = _run(args, inp, truth, caps, window_s, store)
    result["bound"] = bound
    result["lp"] = lp
    return result


def _caps(estate: Estate) -> dict[str, float]:
    from hvmove.lab import bandwidth

    return bandwidth.Fabric(estate).capacity()


def _run(
    args: argparse.Namespace,
    inp: batch.NightInputs,
    truth: dict[str, throughput.Copy],
    caps: dict[str, float],
    window_s: float,
    store: Store,
) -> dict[str, float]:
    win = planner.Window(
        start=START, end=START + timedelta(seconds=window_s), margin=timedelta(seconds=6)
    )
    pending = {m.id: m for m in inp.moves}
    flying: dict[str, Fly] = {}
    done: list[Fly] = []
    t = 0.0
    startups: list[float] = []
    observed: list[throughput.Observation] = []
    first_plan = None
    while (pending or flying) and t < window_s:
        now = START + timedelta(seconds=t)
        typical, slow = learning.startup_allowance(startups, args.plan_startup)
        sched = planner.plan(
            list(pending.values()),
            inp.volumes,
            inp.limits,
            win,
            now,
            running=[_running(f, t) for f in flying.values()],
            bandwidth=inp.bandwidth,
            startup=typical,
            startup_p90=slow,
        )
        first_plan = first_plan or sched
        for due in sched.due(now + timedelta(seconds=1e-6)):
            m = pending.pop(due.id)
            flying[m.id] = Fly(
                m,
                truth[m.id],
                t,
                t + args.startup,
                (due.finish_p50 - START).total_seconds(),
                (due.finish_p90 - START).total_seconds(),
                due.rate_p90,
            )
        # next event: a copy start, a copy end, or a planned start
        nexts = [a.start for a in sched.admitted if a.id in pending]
        t_next = min([(x - START).total_seconds() for x in nexts] + [math.inf])
        t = _advance(flying, caps, t, min(t_next, window_s), done, startups)
        if args.relearn and not ORACLE and done and done[-1].end == t:
            _relearn(inp, pending, done, observed, store)
    moved = sum(f.move.bytes for f in done if f.end is not None and f.end <= window_s)
    overruns = sum(1 for f in flying.values())
    cov = [f.end <= f.p90_end + 1e-6 for f in done]
    eta = [(f.end - f.started) / max(f.p50_end - f.started, 1e-9) for f in done]
    if args.verbose:
        _report(done, flying, pending, truth, first_plan)
        _usage(done, flying, pending, truth, caps, window_s)
    return {
        "bytes": moved,
        "overruns": overruns,
        "cov": sum(cov) / len(cov) if cov else math.nan,
        "eta": statistics.median(eta) if eta else math.nan,
        "moves": len(done),
        "last_end": max([f.end for f in done] + [0.0]),
    }


def _relearn(inp, pending, done, observed, store) -> None:  # type: ignore[no-untyped-def]
    f = done[-1]
    observed.append(
        throughput.Observation(
            f.move.source_volumes[0],
            f.move.destination_volume,
            f.move.odx,
            f.move.bytes,
            f.end - f.copy_at,
            concurrent=statistics.mean(f.shared) if f.shared else 1.0,
            probe_rate=inp.probes.get(f.move.id),
        )
    )
    inp.moves = list(pending.values())
    model = learning.night_model(
        learning.observations(store) + observed,
        inp.moves,
        {v.key: v.write_bandwidth for v in inp.volumes if v.write_bandwidth},
    )
    inp.moves = [model.planned(m, inp.probes.get(m.id), batch.FALLBACK_RATE) for m in inp.moves]
    inp.bandwidth = model.bandwidth
    pending.update({m.id: m for m in inp.moves})


def _running(f: Fly, t: float) -> planner.RunningMove:
    return planner.RunningMove(
        id=f.move.id,
        host=f.move.host,
        vm=f.move.vm,
        source_volumes=f.move.source_volumes,
        destination_volume=f.move.destination_volume,
        expected_finish=START + timedelta(seconds=f.p90_end),
        reserved_bytes=f.move.reservation,
        shares=f.move.shares,
        rate=f.rate,
        bytes_left=int(f.move.bytes - f.done) if f.copy_at <= t else None,
    )


def _advance(
    flying: dict[str, Fly],
    caps: dict[str, float],
    t: float,
    until: float,
    done: list[Fly],
    startups: list[float],
) -> float:
    """Run the fluid from ``t`` to the first copy end, copy start or ``until``."""
    while True:
        copying = [f for f in flying.values() if f.copy_at <= t + 1e-9]
        rates = throughput.fair_share([f.copy for f in copying], caps)
        ends = [t + (f.move.bytes - f.done) / rates[f.move.id] for f in copying]
        starts = [f.copy_at for f in flying.values() if f.copy_at > t + 1e-9]
        step_to = min(ends + starts + [until])
        for f in copying:
            f.done += rates[f.move.id] * (step_to - t)
            vols = {r for r in f.copy.resources}
            f.shared.append(sum(1 for g in copying if vols & set(g.copy.resources)))
        t = step_to
        finished = [f for f in copying if f.done >= f.move.bytes * (1 - 1e-9)]
        for f in finished:
            f.end = t
            del flying[f.move.id]
            done.append(f)
            startups.append(f.copy_at - f.started)
        if finished or t >= until - 1e-9:
            return t


def _usage(done, flying, pending, truth, caps, window_s) -> None:  # type: ignore[no-untyped-def]
    """Per resource: bytes completed through it, bytes of the LP's optimum, its capacity."""
    from scipy.optimize import linprog

    ids = list(truth)
    fit = [min(truth[i].demand * window_s, _size(i, done, flying, pending)) for i in ids]
    fit = [
        f if f >= _size(i, done, flying, pending) - 1 else 0 for f, i in zip(fit, ids, strict=False)
    ]
    res = sorted({r for c in truth.values() for r in c.resources if r in caps})
    a = [[1.0 if r in truth[i].resources else 0.0 for i in ids] for r in res]
    lp = linprog(
        [-1.0] * len(ids),
        A_ub=a,
        b_ub=[caps[r] * window_s for r in res],
        bounds=[(0, x) for x in fit],
        method="highs",
    )
    got = {f.move.id: f.move.bytes for f in done if f.end <= window_s}
    for r, row in zip(res, a, strict=False):
        lp_r = sum(x * y for x, y in zip(row, lp.x, strict=False))
        sim_r = sum(got.get(i, 0) for i, x in zip(ids, row, strict=False) if x)
        print(
            f"  {r:45} cap {caps[r] * window_s / 2**40:6.1f} lp {lp_r / 2**40:6.1f} "
            f"sim {sim_r / 2**40:6.1f}"
        )
    print("  total lp", round(-lp.fun / 2**40, 1), "sim", round(sum(got.values()) / 2**40, 1))


def _size(i, done, flying, pending) -> int:  # type: ignore[no-untyped-def]
    for f in [*done, *flying.values()]:
        if f.move.id == i:
            return f.move.bytes
    return pending[i].bytes


def _report(done, flying, pending, truth, first_plan) -> None:  # type: ignore[no-untyped-def]
    print("first plan: admitted", len(first_plan.admitted), "deferred", len(first_plan.deferred))
    for f in sorted(done, key=lambda f: f.started):
        d = truth[f.move.id].demand
        print(
            f"  {f.move.vm:14} {f.move.host} {'odx' if f.move.odx else 'host'} "
            f"{f.move.bytes / 2**40:6.2f}TiB "
            f"start {f.started:6.1f} end {f.end:6.1f} p50 {f.p50_end:6.1f} p90 {f.p90_end:6.1f} "
            f"p50rate/demand {f.move.throughput.p50 / d:5.2f} p90/demand "
            f"{f.move.throughput.p90 / d:5.2f} planned/demand {f.rate / d:5.2f}"
        )
    for f in flying.values():
        print(f"  OVERRUN {f.move.vm} start {f.started:.1f} p90 {f.p90_end:.1f}")
    for m in pending.values():
        d = truth[m.id].demand
        print(
            f"  left {m.vm:14} {m.host} {'odx' if m.odx else 'host'} {m.bytes / 2**40:6.2f}TiB "
            f"alone {m.bytes / d:6.1f}s p50/demand {m.throughput.p50 / d:5.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-5")
    ap.add_argument("--minutes", type=int, default=3)
    ap.add_argument("--host-limit", type=int, default=4)
    ap.add_argument("--startup", type=float, default=3.0, help="seconds before a copy begins")
    ap.add_argument("--plan-startup", type=float, default=0.0)
    ap.add_argument("--no-relearn", dest="relearn", action="store_false")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--no-source-probes", action="store_true")
    args = ap.parse_args()
    global ORACLE, SOURCE_PROBES
    ORACLE = args.oracle
    SOURCE_PROBES = not args.no_source_probes
    a, _, b = args.seeds.partition("-")
    for seed in range(int(a), int(b or a) + 1):
        r = simulate(args, seed)
        print(
            f"seed {seed}: bytes/bound={r['bytes'] / r['bound']:.3f} "
            f"(/lp {r['bytes'] / r['lp']:.3f}) overruns={r['overruns']} "
            f"p90_coverage={r['cov']:.2f} eta={r['eta']:.2f} moves={r['moves']} "
            f"last_end={r['last_end']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
