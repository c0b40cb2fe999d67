"""What the store's history says about tonight's copies: per move its rate alone (P50 and P90),
the bandwidth resources it shares, and their capacities, as the planner takes them
(``hvmove.throughput`` describes the model; ``hvmove.sharing`` how the planner uses it).

What hvmove can see from outside the array: each volume (probed by the prechecks, or bounded by
the fastest copy history shows through it) and, for ODX, which volumes offload to each other
(volumes joined by an ODX copy are one offload group: the array's copy engine, which all ODX
copies inside it share). An array's own limit on host copies is not visible; the per-class
learning absorbs what it costs on average.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select

from hvmove import throughput
from hvmove.planner import PlannedMove, Throughput
from hvmove.store import MoveRecord, Store, ThroughputSample


def observations(store: Store) -> list[throughput.Observation]:
    """Every completed copy in the store, with the mean concurrency of its samples."""
    with store.session() as s:
        mean = dict(
            s.execute(
                select(ThroughputSample.move_id, func.avg(ThroughputSample.concurrent))
                .where(ThroughputSample.concurrent.is_not(None))
                .group_by(ThroughputSample.move_id)
            ).all()
        )
        rows = s.execute(
            select(
                MoveRecord.id,
                MoveRecord.source_volume,
                MoveRecord.destination_volume,
                MoveRecord.odx,
                MoveRecord.bytes_total,
                MoveRecord.copy_seconds,
                MoveRecord.measured_mbps,
            ).where(MoveRecord.status == "completed", MoveRecord.copy_seconds > 0)
        ).all()
    return [
        throughput.Observation(
            source=r.source_volume,
            destination=r.destination_volume,
            odx=bool(r.odx),
            bytes=r.bytes_total,
            seconds=r.copy_seconds,
            concurrent=float(mean.get(r.id) or 1.0),
            probe_rate=r.measured_mbps * 1e6 if r.measured_mbps else None,
        )
        for r in rows
        if r.bytes_total and r.source_volume and r.destination_volume
    ]


def offload_groups(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Volume key -> its ODX group's name (the smallest key in it): volumes joined by ODX
    copies, directly or through others (ODX works inside one array's copy manager)."""
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {k: root(k) for k in parent}


def shares_of(source: str, destination: str, odx: bool, groups: Mapping[str, str]) -> list[str]:
    if odx and source in groups:
        return [throughput.offload_resource(groups[source])]
    return list(throughput.copy_resources(source, destination, odx_array=None, arrays={}))


@dataclass
class NightModel:
    """Tonight's throughput model, learned from the store and this night's prechecks."""

    learner: throughput.Learner
    groups: dict[str, str]
    bandwidth: dict[str, float] = field(default_factory=dict)

    def nominal(self, source: str, probe_rate: float | None) -> float | None:
        """What the copy's volumes allow: its destination's probe, or its source volume's
        bandwidth where tonight's probes (another move's destination) or history know it and it
        is slower. The probe measures the destination only, and a copy from a slower source
        runs at the source's pace (hvmove.throughput: a copy uses both volumes)."""
        known = self.bandwidth.get(throughput.volume_resource(source))
        if probe_rate is None or known is None:
            return probe_rate
        return min(probe_rate, known)

    def planned(self, move: PlannedMove, probe_rate: float | None, fallback: float) -> PlannedMove:
        """The move with its learned rate alone and the resources it shares."""
        src, dst = move.source_volumes[0], move.destination_volume
        est = self.learner.estimate(src, dst, move.odx, self.nominal(src, probe_rate), fallback)
        shares = shares_of(src, dst, move.odx, self.groups)
        return move.model_copy(
            update={"throughput": Throughput(p50=est.p50, p90=est.p90), "shares": shares}
        )


def night_model(
    obs: list[throughput.Observation],
    tonight: Iterable[PlannedMove],
    probes: Mapping[str, float],
) -> NightModel:
    """``probes``: volume key -> the rate the bandwidth probe measured there tonight (bytes/s)."""
    moves = list(tonight)
    pairs = [(o.source, o.destination) for o in obs if o.odx]
    pairs += [(m.source_volumes[0], m.destination_volume) for m in moves if m.odx]
    groups = offload_groups(pairs)
    bw: dict[str, float] = {}
    for key, rate in probes.items():
        bw[throughput.volume_resource(key)] = rate
    for o in obs:
        if o.odx and o.source in groups:
            # what one copy got is at most what the engine gives: its *observed* rate, never
            # corrected for concurrency. The copies counted with it share its volumes, host
            # copies included, not necessarily the engine: corrected, the engine of seed 2's
            # clu1 array was taken for 2x its capacity and seven ODX copies planned on it at
            # once finished 3-6x slower than alone, past their P90
            res = throughput.offload_resource(groups[o.source])
            bw[res] = max(bw.get(res, 0.0), o.rate)
        elif not o.odx and o.concurrent <= 1.0:
            # a copy alone ran no faster than either of its volumes allows
            for key in (o.source, o.destination):
                res = throughput.volume_resource(key)
                bw[res] = max(bw.get(res, 0.0), o.rate)
    # the volumes tonight's probes measured (a past copy's rate alone only bounds its volumes
    # from below: over it, every copy alone would have a ratio of 1)
    model = NightModel(throughput.Learner(obs, dict(probes)), groups, bw)
    fastest: dict[str, float] = {}
    for m in moves:  # an offload group without history: at least its fastest move alone
        src, dst = m.source_volumes[0], m.destination_volume
        if m.odx and src in groups:
            res = throughput.offload_resource(groups[src])
            # as learned now (the class ratio may have changed since ``m`` was estimated)
            nominal = model.nominal(src, probes.get(dst))
            rate = model.learner.estimate(src, dst, True, nominal, m.throughput.p50).p50
            fastest[res] = max(fastest.get(res, 0.0), rate)
    for res, rate in fastest.items():
        bw.setdefault(res, rate)
    return model


def startup_prior(precheck_seconds: float, moves: int, slots: int) -> float:
    """Seconds to allow before the night has seen a copy begin. A move's run first repeats its
    own prechecks (the night just ran them for every move, one after another, in
    ``precheck_seconds``); the first moves start side by side, up to every host's slots at
    once, and share the one orchestrator and the hosts' management services, so allow the
    per-move time once for each of them."""
    if moves <= 0:
        return 0.0
    return precheck_seconds / moves * max(1, min(moves, slots))


# Start-ups follow the orchestrator's load, which changes through the night: the allowance
# rests on the latest ones. Over seven lab nights the whole night's inclusive 90th percentile was
# exceeded by 20 % of the next start-ups, the latest 20's exclusive one by 13 %.
RECENT_STARTUPS = 20
# With none or few start-ups seen there is no tail to measure: one in ten is allowed at least this
# many times the typical one. Allowing the typical one for both, the first wave's copies planned
# at a volume's full share (no spread of their own) missed their P90 by 0.01-0.8 s whenever their
# start-up ran a little long; eleven lab nights measured their start-ups' 90th percentile at
# 1.1-2.0x the median in the first wave and 1.35-2.8x later.
FEW_STARTUPS_SPREAD = 2.0


def startup_allowance(observed: list[float], prior: float = 0.0) -> tuple[float, float]:
    """Seconds to allow between starting a move and its copy beginning, from the latest start-ups
    the night observed (oldest first): the typical one (the median) and one in ten (the 90th
    percentile of many, estimated as ``throughput.points`` does: the inclusive estimate is a
    P83; of few, the slowest but at least ``FEW_STARTUPS_SPREAD`` x the typical); before any,
    ``prior`` as the typical one."""
    if not observed:
        return prior, prior * FEW_STARTUPS_SPREAD
    recent = observed[-RECENT_STARTUPS:]
    typical = statistics.median(recent)
    if len(recent) < 10:
        return typical, max(max(recent), typical * FEW_STARTUPS_SPREAD)
    return typical, statistics.quantiles(recent, n=10, method="exclusive")[-1]
