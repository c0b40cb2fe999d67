"""The event-driven list scheduler and the priority rules it tries."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hvmove.planner.estate import _Estate, _Job
from hvmove.planner.models import (
    IMPROVEMENT_ROUNDS,
    DeferReason,
    Resource,
)
from hvmove.sharing import Shares


@dataclass(frozen=True, slots=True)
class _Deferral:
    reason: DeferReason
    at: float  # when it was decided, seconds from the origin
    spare: int  # bytes the destination had left for this batch at that moment


@dataclass(slots=True)
class _Outcome:
    starts: dict[int, float]  # job index -> start, seconds from the origin
    deferred: dict[int, _Deferral]
    bytes_admitted: int
    makespan: float
    estate: _Estate  # its start-up allowance (``_Estate.durations``)
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)  # planned at admission

    def durations(self, job: _Job) -> tuple[float, float, float, float]:
        """rate50, rate90, d50, d90 of an admitted job: its own, or as planned at admission."""
        if job.index not in self.rates:
            return job.rate50, job.rate90, job.d50, job.d90
        r50, r90 = self.rates[job.index]
        return r50, r90, *self.estate.durations(job.move.bytes, r50, r90)

    def score(self) -> tuple[int, int, float]:
        return (-self.bytes_admitted, -len(self.starts), self.makespan)


@dataclass(slots=True)
class _Sim:
    """Mutable state of one simulated night."""

    estate: _Estate
    horizon: float
    busy: dict[Resource, int]
    spare: dict[str, int]
    # heap of running (end, seq, resources, bandwidth shares, planned rate)
    ends: list[tuple[float, int, tuple[Resource, ...], tuple[str, ...], float]]
    bw: Shares

    @classmethod
    def begin(cls, estate: _Estate, horizon: float) -> _Sim:
        spare = {k: estate.spare(k) for k in estate.volumes}
        sim = cls(estate, horizon, {}, spare, [], Shares(estate.bandwidth))
        for seq, h in enumerate(estate.held):
            sim.occupy(h.end, h.resources, seq, h.shares, h.rate)
        return sim

    def occupy(
        self,
        end: float,
        resources: tuple[Resource, ...],
        seq: int,
        shares: tuple[str, ...] = (),
        rate: float = 0.0,
    ) -> None:
        for res in resources:
            self.busy[res] = self.busy.get(res, 0) + 1
        self.bw.add(shares, rate)
        heapq.heappush(self.ends, (end, seq, resources, shares, rate))

    def free(self, job: _Job) -> bool:
        caps, busy = self.estate.caps, self.busy
        for r in job.resources:  # noqa: SIM110 (the planner's hottest line: no generator)
            if busy.get(r, 0) >= caps[r]:
                return False
        return True

    def release_until(self, t: float) -> None:
        while self.ends and self.ends[0][0] <= t:
            _, _, resources, shares, rate = heapq.heappop(self.ends)
            for res in resources:
                self.busy[res] -= 1
            self.bw.remove(shares, rate)

    def offer(self, job: _Job, t: float) -> tuple[float, float] | None:
        """Planned (rate50, rate90) for a move with bandwidth shares starting at ``t`` and
        ending in the window, or None if it must wait for copies to end (hvmove.sharing)."""
        shares = job.move.shares
        for greedy in (False, True):
            r90 = self.bw.offer(shares, job.rate90, greedy=greedy)
            if r90 is None:
                return None
            # the median: its own median rate, at most the share it may take now
            r50 = max(self.bw.offer(shares, job.rate50, greedy=True) or r90, r90)
            if t + self.estate.durations(job.move.bytes, r50, r90)[1] <= self.horizon:
                return r50, r90
        return None


def _never_fits(job: _Job, estate: _Estate) -> DeferReason | None:
    if any(estate.cap(r) == 0 for r in job.resources):
        return "limit"
    if job.move.reservation > estate.spare(job.move.destination_volume):
        return "space"
    return None


def _simulate(estate: _Estate, order: Sequence[_Job], horizon: float, strict: bool) -> _Outcome:
    """Start moves in ``order`` whenever their slots are free. ``strict`` keeps each host's moves
    in order (a later one never overtakes a waiting one): the FIFO baseline."""
    sim = _Sim.begin(estate, horizon)
    held_end = max([h.end for h in estate.held] + [0.0])
    out = _Outcome(starts={}, deferred={}, bytes_admitted=0, makespan=held_end, estate=estate)
    pending: list[_Job] = []
    for job in order:
        reason = _never_fits(job, estate)
        if reason is None:
            pending.append(job)
        else:
            spare = sim.spare[job.move.destination_volume]
            out.deferred[job.index] = _Deferral(reason, 0.0, spare)
    t = 0.0
    while pending:
        sim.release_until(t)
        pending = _start_due(sim, pending, t, out, strict)
        if pending:
            # every waiting move has non-zero limits, so something is running and will end
            t = sim.ends[0][0]
    return out


def _start_due(sim: _Sim, pending: list[_Job], t: float, out: _Outcome, strict: bool) -> list[_Job]:
    waiting: list[_Job] = []
    blocked_hosts: set[Resource] = set()
    for job in pending:
        host = job.resources[0]
        dest = job.move.destination_volume
        rates = None
        if t + job.d90 > sim.horizon:
            # a later start only finishes later: this move cannot make it tonight
            out.deferred[job.index] = _Deferral("window", t, sim.spare[dest])
            continue
        if (strict and host in blocked_hosts) or not sim.free(job):
            blocked_hosts.add(host)
            waiting.append(job)
            continue
        if job.move.reservation > sim.spare[dest]:
            out.deferred[job.index] = _Deferral("space", t, sim.spare[dest])
            continue
        if job.move.shares:
            rates = sim.offer(job, t)
            if rates is None:  # its volumes are planned full until some copy ends
                blocked_hosts.add(host)
                waiting.append(job)
                continue
            out.rates[job.index] = rates
        _, rate90, _, d90 = out.durations(job)
        sim.spare[dest] -= job.move.reservation
        seq = len(out.starts) + len(sim.estate.held)
        sim.occupy(t + d90, job.resources, seq, tuple(job.move.shares) if rates else (), rate90)
        out.starts[job.index] = t
        out.bytes_admitted += job.move.bytes
        out.makespan = max(out.makespan, t + d90)
    return waiting


# --- priority rules ------------------------------------------------------------------------------
def _loads(estate: _Estate) -> dict[Resource, float]:
    """Slot-seconds each resource must deliver, per slot: the per-resource lower bound."""
    work: dict[Resource, float] = {}
    held: dict[Resource, list[float]] = {}
    for job in estate.jobs:
        for res in job.resources:
            work[res] = work.get(res, 0.0) + job.d90
    for h in estate.held:
        for res in h.resources:
            held.setdefault(res, []).append(max(h.end, 0.0))
    for res, ends in held.items():
        # running moves take at most `cap` slots at a time (more may run if the limit was
        # lowered): the slot-seconds they deny are the `cap` latest ends
        work[res] = work.get(res, 0.0) + sum(
            sorted(ends)[-estate.cap(res) :] if estate.cap(res) else []
        )
    return {r: w / estate.cap(r) for r, w in work.items() if estate.cap(r) > 0}


def _rules(estate: _Estate) -> list[Callable[[_Job], tuple[float, ...]]]:
    loads = _loads(estate)

    def crit(job: _Job) -> float:
        return max(loads.get(r, 0.0) for r in job.resources)

    return [
        lambda j: (-j.d90, j.index),  # longest first
        lambda j: (-crit(j), -j.d90, j.index),  # longest first on the busiest resource
        lambda j: (-(crit(j) + j.d90), j.index),  # busy resource and long move, blended
        lambda j: (-loads.get(j.resources[0], 0.0), -j.d90, j.index),  # busiest host first
        lambda j: (-j.move.bytes / j.d90, j.index),  # most bytes per slot-second first
        lambda j: (j.d90, j.index),  # shortest first: packs a window's end (or one host's)
    ]


def _best_order(estate: _Estate, horizon: float) -> tuple[list[_Job], _Outcome]:
    best_order: list[_Job] = []
    best: _Outcome | None = None
    for rule in _rules(estate):
        order = sorted(estate.jobs, key=rule)
        outcome = _simulate(estate, order, horizon, strict=False)
        if best is None or outcome.score() < best.score():
            best_order, best = order, outcome
    assert best is not None
    best_order, best = _per_host(estate, horizon, best_order, best)
    return _improve(estate, horizon, best_order, best)


def _per_host(
    estate: _Estate, horizon: float, order: list[_Job], best: _Outcome
) -> tuple[list[_Job], _Outcome]:
    """Re-sort one host's moves at a time by each rule, in the places they hold in the order,
    and keep what helps. One rule for the whole estate is a compromise: a host whose volumes
    one long copy would hold to the window's end moves more with its short moves first while
    the others keep longest first."""
    rules = _rules(estate)
    hosts = dict.fromkeys(j.resources[0] for j in order)
    for host in hosts:
        slots = [i for i, j in enumerate(order) if j.resources[0] == host]
        if len(slots) < 2:
            continue
        tried = [[order[i].index for i in slots]]
        for rule in rules:
            mine = sorted((order[i] for i in slots), key=rule)
            if [j.index for j in mine] in tried:  # one host's rules often agree: run each once
                continue
            tried.append([j.index for j in mine])
            candidate = list(order)
            for i, job in zip(slots, mine, strict=True):
                candidate[i] = job
            outcome = _simulate(estate, candidate, horizon, strict=False)
            if outcome.score() < best.score():
                order, best = candidate, outcome
    return order, best


def _improve(
    estate: _Estate, horizon: float, order: list[_Job], best: _Outcome
) -> tuple[list[_Job], _Outcome]:
    """Pull the move that finishes last (or a random one) forward and keep what helps: greedy
    list schedules are sensitive to a few ties, and re-running one costs milliseconds."""
    rng = random.Random(len(order))
    for _ in range(IMPROVEMENT_ROUNDS if len(order) > 1 else 0):
        candidate = _nudge(order, best, rng)
        outcome = _simulate(estate, candidate, horizon, strict=False)
        if outcome.score() < best.score():
            order, best = candidate, outcome
    return order, best


def _nudge(order: list[_Job], outcome: _Outcome, rng: random.Random) -> list[_Job]:
    pos = {job.index: i for i, job in enumerate(order)}
    started = [j for j in order if j.index in outcome.starts]
    if started and rng.random() < 0.5:
        last = max(started, key=lambda j: outcome.starts[j.index] + outcome.durations(j)[3])
        i = pos[last.index]
    else:
        i = rng.randrange(len(order))
    j = rng.randrange(0, i + 1) if i else rng.randrange(len(order))
    moved = order[:i] + order[i + 1 :]
    moved.insert(j, order[i])
    return moved
