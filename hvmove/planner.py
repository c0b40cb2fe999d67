"""Nightly-batch planner: which moves start when, and which wait for another night.

A pure function of its inputs (no Prefect, no I/O): the nightly flow calls ``plan`` at the start of
the window and again each time a move finishes, passing the moves still waiting, fresh volume
figures, the moves in flight and the current time, and starts the moves that are due.

The model, in short:

- **Durations.** A move copies ``bytes`` at a rate fixed when it is admitted; its P90 duration is
  ``bytes / rate.p90`` (the pessimistic rate) and that is what every admission decision uses. A
  rate never changes once admitted, so admitting a later move can never push an earlier one past
  the window end.
- **Sharing.** A volume's measured bandwidth (read for sources, write for destinations) is split
  evenly between as many moves as its concurrency limit allows, so a host-side copy runs at the
  lower of its own estimate and that share: a volume running at its limit is never oversubscribed.
  ODX copies are done inside the array and do not cross the host's path to the volume, so only
  their own estimate (from past ODX moves) applies; they still take a slot.
- **Limits.** Each move holds one slot of its host, of each of its source volumes and of its
  destination volume from its start to its P90 finish; at no instant does any of them exceed its
  limit, counting the moves already running. A VM is never in two moves at once.
- **Space.** A move reserves its destination bytes when it is admitted, for the rest of the
  batch: space freed on sources is not counted (sources are kept until verified), so
  ``free - reservations`` never drops below the volume's headroom.
- **Window.** A move is admitted only if its P90 finish is no later than the window end less its
  safety margin; anything else is deferred with a reason code and a sentence for the admin.

The scheduler is an event-driven list scheduler: at each instant a slot frees it starts, in
priority order, every waiting move whose slots are all free. Several priority rules are tried
(longest first, longest first on the most loaded resource, ...), then a few seeded reorderings of
the best one; the schedule that admits the most bytes, then finishes first, wins.
``lower_bound`` is the matching bound: no schedule in this model can finish before the busiest
resource's work (move-seconds at the planned rates) divided by its slots, which for a volume whose
moves are all bandwidth-bound is its bytes over its bandwidth.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from hvmove.models import VolumeKind
from hvmove.sharing import Shares

GiB = 1024**3

# A move holds its slots for at least this long even with (almost) nothing to copy: the create,
# switch and delete steps take time, and a zero-length interval would make limits meaningless.
MIN_MOVE_SECONDS = 1.0

# With too few samples there is no trustworthy tail: assume the bad nights run this much slower.
FEW_SAMPLES_PESSIMISM = 0.7
TAIL_SAMPLES = 10

# Random reorderings tried after the fixed priority rules; seeded, so a plan is reproducible.
IMPROVEMENT_ROUNDS = 16

DeferReason = Literal["window", "space", "limit"]
# ("host", name) | ("vm", "host|vm") | ("source", volume key) | ("destination", volume key)
Resource = tuple[str, str]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- inputs --------------------------------------------------------------------------------------
def volume_key(
    volume: str, *, kind: VolumeKind, host: str | None = None, cluster: str | None = None
) -> str:
    """A key naming one volume across the whole estate, the same whichever host reports it.

    A local drive is only unique on its host (``hv01|E:\\``); a CSV path is the same on every node
    of a cluster and repeats between clusters (``clu1|C:\\ClusterStorage\\Volume1\\``); a share is
    unique as it is (``\\\\fs01\\vms\\``). Windows paths ignore case, so the key does too.
    """
    path = volume.replace("/", "\\")
    if not path.endswith("\\"):
        path += "\\"
    if kind == "smb":
        if not path.startswith("\\\\"):
            raise ValueError(f"an SMB volume is a UNC path, not {volume!r}")
        return path.lower()
    if kind == "csv":
        if not cluster:
            # keying a CSV per host would count one volume's space twice
            raise ValueError(f"CSV {volume!r} needs its cluster name to get a key")
        return f"{cluster.lower()}|{_drive_path(path)}"
    if not host:
        raise ValueError(f"local volume {volume!r} needs its host name to get a key")
    return f"{host.lower()}|{_drive_path(path)}"


def _drive_path(path: str) -> str:
    return path[:1].upper() + path[1:].lower()


class Throughput(_Frozen):
    """Copy rate of one move in bytes/s, summarised as two points of its distribution.

    ``p50`` is the median rate; ``p90`` is the rate behind the P90 duration (nine nights in ten
    are at least this fast), so it is the lower of the two.
    """

    p50: float = Field(gt=0)
    p90: float = Field(gt=0)

    @model_validator(mode="after")
    def _pessimistic(self) -> Self:
        if self.p90 > self.p50:
            raise ValueError("p90 is the pessimistic rate and cannot exceed p50")
        return self

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> Throughput:
        """Summarise observed rates (bandwidth probes, past moves between the same volumes)."""
        rates = sorted(r for r in samples if r > 0)
        if not rates:
            raise ValueError("no positive rate to estimate from")
        median = statistics.median(rates)
        if len(rates) >= TAIL_SAMPLES:
            tail = statistics.quantiles(rates, n=10, method="inclusive")[0]
        else:
            tail = min(rates[0], median * FEW_SAMPLES_PESSIMISM)
        return cls(p50=median, p90=min(tail, median))


class PlannedMove(_Frozen):
    """One VM move that passed its prechecks, with what the planner needs to place it."""

    id: str = Field(min_length=1)
    host: str = Field(min_length=1)
    vm: str = Field(min_length=1)
    source_volumes: list[str] = Field(min_length=1, description="volume keys (see volume_key)")
    destination_volume: str = Field(min_length=1)
    bytes: int = Field(ge=0, description="bytes to copy")
    reserve_bytes: int | None = Field(
        None, ge=0, description="bytes to reserve at the destination; default: bytes"
    )
    throughput: Throughput
    odx: bool = False
    shares: list[str] = Field(
        default_factory=list,
        description="bandwidth resources its copy shares with others (hvmove.throughput); "
        "with them, its rate is planned by hvmove.sharing instead of the volume model",
    )

    @property
    def reservation(self) -> int:
        # the caller may reserve virtual sizes instead (thin-provisioning safety, hyperv.md §5.2)
        return self.bytes if self.reserve_bytes is None else self.reserve_bytes


class VolumeState(_Frozen):
    """A volume as inventory saw it. The headroom is the stricter of ``headroom_bytes`` and
    ``headroom_percent`` of capacity: that much must stay free after every reservation."""

    key: str = Field(min_length=1)
    capacity: int = Field(gt=0)
    free: int = Field(ge=0)
    headroom_percent: float = Field(10.0, ge=0, le=90)
    headroom_bytes: int = Field(0, ge=0)
    read_bandwidth: float | None = Field(None, gt=0, description="bytes/s; None: not a bound")
    write_bandwidth: float | None = Field(None, gt=0, description="bytes/s; None: not a bound")
    label: str = ""

    @model_validator(mode="after")
    def _free_fits(self) -> Self:
        if self.free > self.capacity:
            raise ValueError(f"{self.key}: free {self.free} exceeds capacity {self.capacity}")
        return self

    @property
    def floor(self) -> int:
        return max(self.headroom_bytes, math.ceil(self.capacity * self.headroom_percent / 100))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        scope, sep, path = self.key.partition("|")
        return f"{path} on {scope}" if sep else self.key


class Limits(_Frozen):
    """Concurrent moves allowed per host and per volume (as a source and as a destination)."""

    hosts: dict[str, int] = Field(description="host -> MaximumStorageMigrations, maybe capped")
    source_volume: int = Field(2, ge=0)
    destination_volume: int = Field(2, ge=0)
    source_overrides: dict[str, int] = {}
    destination_overrides: dict[str, int] = {}

    @model_validator(mode="after")
    def _non_negative(self) -> Self:
        for table in (self.hosts, self.source_overrides, self.destination_overrides):
            if any(v < 0 for v in table.values()):
                raise ValueError("a concurrency limit cannot be negative")
        return self

    @staticmethod
    def host_limit(maximum_storage_migrations: int, cap: int | None = None) -> int:
        """The host's own limit, lowered by configuration but never raised above it: past it
        Hyper-V fails the new move instead of queueing it (hyperv.md §3.1)."""
        return maximum_storage_migrations if cap is None else min(cap, maximum_storage_migrations)

    def host(self, name: str) -> int:
        folded = {h.lower(): n for h, n in self.hosts.items()}
        if name.lower() not in folded:
            raise ValueError(f"no concurrency limit for host {name!r}: read its settings first")
        return folded[name.lower()]

    def source(self, key: str) -> int:
        return self.source_overrides.get(key, self.source_volume)

    def destination(self, key: str) -> int:
        return self.destination_overrides.get(key, self.destination_volume)


class Window(_Frozen):
    """The night's window; no move may be planned to finish (at P90) after ``end - margin``."""

    start: AwareDatetime
    end: AwareDatetime
    margin: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.margin < timedelta(0):
            raise ValueError("the safety margin cannot be negative")
        if self.end - self.margin <= self.start:
            raise ValueError("the window ends (less its margin) before it starts")
        return self

    @property
    def last_finish(self) -> datetime:
        return self.end - self.margin


class RunningMove(_Frozen):
    """A move in flight when re-planning. It holds its slots until ``expected_finish`` (the
    caller's current estimate); if that is already past, it holds them through the window, since
    nothing says when it will really end. ``reserved_bytes`` is the part of its reservation the
    destination's ``free`` does not show yet (typically the bytes still to copy)."""

    id: str = Field(min_length=1)
    host: str = Field(min_length=1)
    vm: str = Field(min_length=1)
    source_volumes: list[str] = Field(min_length=1)
    destination_volume: str = Field(min_length=1)
    expected_finish: AwareDatetime
    reserved_bytes: int = Field(0, ge=0)
    shares: list[str] = Field(default_factory=list, description="as PlannedMove.shares")
    rate: float | None = Field(None, gt=0, description="its planned P90 rate (bytes/s)")


# --- outputs -------------------------------------------------------------------------------------
class ScheduledMove(_Frozen):
    id: str
    host: str
    vm: str
    source_volumes: list[str]
    destination_volume: str
    bytes: int
    odx: bool
    start: datetime
    finish_p50: datetime
    finish_p90: datetime
    rate_p50: float = Field(description="bytes/s after volume sharing")
    rate_p90: float


class DeferredMove(_Frozen):
    id: str
    host: str
    vm: str
    reason: DeferReason
    detail: str


class Schedule(_Frozen):
    origin: datetime = Field(description="when the schedule begins: now, or the window start")
    window: Window
    admitted: list[ScheduledMove] = Field(description="in start order")
    deferred: list[DeferredMove]
    makespan_seconds: float = Field(description="origin to the last P90 finish, running included")
    bytes_admitted: int
    bytes_deferred: int

    def due(self, at: datetime) -> list[ScheduledMove]:
        """The admitted moves the flow should start by ``at``."""
        return [m for m in self.admitted if m.start <= at]


# --- the estate, flattened for the scheduler -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Job:
    index: int  # position in the caller's list: the last tie-breaker, and FIFO's order
    move: PlannedMove
    resources: tuple[Resource, ...]
    rate50: float
    rate90: float
    d50: float
    d90: float


@dataclass(frozen=True, slots=True)
class _Held:
    end: float  # seconds from the origin
    resources: tuple[Resource, ...]
    destination: str
    reserved: int
    shares: tuple[str, ...] = ()
    rate: float = 0.0


@dataclass(slots=True)
class _Estate:
    volumes: dict[str, VolumeState]
    jobs: list[_Job]
    held: list[_Held]
    caps: dict[Resource, int]
    bandwidth: Mapping[str, float]  # capacity of the resources moves share (hvmove.sharing)

    def cap(self, res: Resource) -> int:
        return self.caps[res]

    def spare(self, key: str) -> int:
        """Bytes that moves of this batch may still reserve on a volume."""
        vol = self.volumes[key]
        held = sum(h.reserved for h in self.held if h.destination == key)
        return vol.free - held - vol.floor


def _resources(item: PlannedMove | RunningMove) -> tuple[Resource, ...]:
    # a VM with two disks on one volume takes one slot there
    unique = dict.fromkeys(item.source_volumes)
    return (
        ("host", item.host.lower()),
        # one move per VM at a time, whatever the plan says: a second Move-VMStorage of a VM
        # that is moving fails, and two entries for one VM are a plan mistake to survive
        ("vm", f"{item.host.lower()}|{item.vm.lower()}"),
        *(("source", s) for s in unique),
        ("destination", item.destination_volume),
    )


def _share(bandwidth: float | None, slots: int) -> float:
    return math.inf if bandwidth is None or slots <= 0 else bandwidth / slots


def _volume_cap(move: PlannedMove, volumes: dict[str, VolumeState], limits: Limits) -> float:
    if move.odx:
        return math.inf
    caps = [_share(volumes[s].read_bandwidth, limits.source(s)) for s in move.source_volumes]
    dest = volumes[move.destination_volume]
    caps.append(_share(dest.write_bandwidth, limits.destination(dest.key)))
    return min(caps)


def _job(
    index: int,
    move: PlannedMove,
    volumes: dict[str, VolumeState],
    limits: Limits,
    bandwidth: Mapping[str, float],
) -> _Job:
    # with shares, the rate alone: the planned rate is decided at admission (hvmove.sharing)
    cap = (
        Shares(bandwidth).alone(move.shares, math.inf)
        if move.shares
        else _volume_cap(move, volumes, limits)
    )
    rate50, rate90 = min(move.throughput.p50, cap), min(move.throughput.p90, cap)
    return _Job(
        index=index,
        move=move,
        resources=_resources(move),
        rate50=rate50,
        rate90=rate90,
        d50=max(move.bytes / rate50, MIN_MOVE_SECONDS),
        d90=max(move.bytes / rate90, MIN_MOVE_SECONDS),
    )


def _held(run: RunningMove, now: datetime, origin: datetime, overdue_end: float) -> _Held:
    overdue = run.expected_finish <= now
    return _Held(
        end=overdue_end if overdue else (run.expected_finish - origin).total_seconds(),
        resources=_resources(run),
        destination=run.destination_volume,
        reserved=run.reserved_bytes,
        shares=tuple(run.shares) if run.rate else (),
        rate=run.rate or 0.0,
    )


def _check_keys(
    items: Iterable[PlannedMove | RunningMove], volumes: dict[str, VolumeState], limits: Limits
) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"move id {item.id!r} appears twice")
        seen.add(item.id)
        limits.host(item.host)
        for key in [*item.source_volumes, item.destination_volume]:
            if key not in volumes:
                raise ValueError(f"move {item.id!r}: no state for volume {key!r}")


def _cap(res: Resource, limits: Limits) -> int:
    kind, name = res
    if kind == "host":
        return limits.host(name)
    if kind == "vm":
        return 1
    return limits.source(name) if kind == "source" else limits.destination(name)


def _estate(
    moves: Sequence[PlannedMove],
    volumes: Sequence[VolumeState],
    limits: Limits,
    running: Sequence[RunningMove] = (),
    now: datetime | None = None,
    origin: datetime | None = None,
    overdue_end: float = 0.0,
    bandwidth: Mapping[str, float] | None = None,
) -> _Estate:
    by_key = {v.key: v for v in volumes}
    if len(by_key) != len(volumes):
        raise ValueError("two volume states share a key")
    _check_keys([*moves, *running], by_key, limits)
    held: list[_Held] = []
    if running:
        if now is None:
            raise ValueError("running moves need the current time")
        held = [_held(r, now, origin or now, overdue_end) for r in running]
    bw = dict(bandwidth or {})
    jobs = [_job(i, m, by_key, limits, bw) for i, m in enumerate(moves)]
    resources = {r for item in [*jobs, *held] for r in item.resources}
    caps = {r: _cap(r, limits) for r in resources}
    return _Estate(volumes=by_key, jobs=jobs, held=held, caps=caps, bandwidth=bw)


# --- the list scheduler --------------------------------------------------------------------------
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
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)  # planned at admission

    def durations(self, job: _Job) -> tuple[float, float, float, float]:
        """rate50, rate90, d50, d90 of an admitted job: its own, or as planned at admission."""
        if job.index not in self.rates:
            return job.rate50, job.rate90, job.d50, job.d90
        r50, r90 = self.rates[job.index]
        b = job.move.bytes
        return r50, r90, max(b / r50, MIN_MOVE_SECONDS), max(b / r90, MIN_MOVE_SECONDS)

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
        return all(self.busy.get(r, 0) < self.estate.cap(r) for r in job.resources)

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
            if t + max(job.move.bytes / r90, MIN_MOVE_SECONDS) <= self.horizon:
                # the median: its own median rate, at most the share it may take now
                r50 = self.bw.offer(shares, job.rate50, greedy=True) or r90
                return max(r50, r90), r90
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
    out = _Outcome(starts={}, deferred={}, bytes_admitted=0, makespan=held_end)
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
    return _improve(estate, horizon, best_order, best)


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


# --- public API ----------------------------------------------------------------------------------
def plan(
    moves: Sequence[PlannedMove],
    volumes: Sequence[VolumeState],
    limits: Limits,
    window: Window,
    now: datetime,
    running: Sequence[RunningMove] = (),
    *,
    bandwidth: Mapping[str, float] | None = None,
) -> Schedule:
    """Order the batch: admitted moves with planned start and finishes, the rest deferred.

    Raises ``ValueError`` for inconsistent inputs (a volume or host limit missing, an id twice):
    those are bugs upstream, not reasons to skip one VM.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    origin = max(now, window.start)
    horizon = (window.last_finish - origin).total_seconds()
    # an overdue move holds its slots through the window: nobody knows when it will end
    estate = _estate(
        moves, volumes, limits, running, now, origin, max(horizon, 0.0), bandwidth=bandwidth
    )
    order, outcome = _best_order(estate, horizon)
    return Schedule(
        origin=origin,
        window=window,
        admitted=_admitted(order, outcome, origin),
        deferred=_deferred(estate, outcome, origin, horizon),
        makespan_seconds=outcome.makespan,
        bytes_admitted=outcome.bytes_admitted,
        bytes_deferred=sum(estate.jobs[i].move.bytes for i in outcome.deferred),
    )


def lower_bound(
    moves: Sequence[PlannedMove],
    volumes: Sequence[VolumeState],
    limits: Limits,
    running: Sequence[RunningMove] = (),
    now: datetime | None = None,
) -> float:
    """Seconds from ``now`` that no schedule of all ``moves`` can beat under this model (P90
    rates, no window): the busiest resource's work over its slots, the longest move, or the last
    running move's expected finish."""
    estate = _estate(moves, volumes, limits, running, now)
    # a move that a zero limit forbids never runs: it bounds nothing
    runnable = [j.d90 for j in estate.jobs if all(estate.cap(r) for r in j.resources)]
    loads = list(_loads(estate).values())
    return max(runnable + [h.end for h in estate.held] + loads + [0.0])


def fifo_makespan(
    moves: Sequence[PlannedMove], volumes: Sequence[VolumeState], limits: Limits
) -> float:
    """Seconds a plain script would take: each host works through its moves in plan order, at
    most its limit at a time, and obeys the same volume limits (so the rates are comparable)."""
    estate = _estate(moves, volumes, limits)
    return _simulate(estate, estate.jobs, math.inf, strict=True).makespan


# --- turning the outcome into the schedule -------------------------------------------------------
def _at(origin: datetime, seconds: float) -> datetime:
    return origin + timedelta(seconds=seconds)


def _admitted(order: list[_Job], outcome: _Outcome, origin: datetime) -> list[ScheduledMove]:
    rank = {job.index: i for i, job in enumerate(order)}
    chosen = sorted(
        (j for j in order if j.index in outcome.starts),
        key=lambda j: (outcome.starts[j.index], rank[j.index]),
    )
    return [_scheduled(j, outcome, origin) for j in chosen]


def _scheduled(job: _Job, outcome: _Outcome, origin: datetime) -> ScheduledMove:
    m = job.move
    start = outcome.starts[job.index]
    rate50, rate90, d50, d90 = outcome.durations(job)
    return ScheduledMove(
        id=m.id,
        host=m.host,
        vm=m.vm,
        source_volumes=m.source_volumes,
        destination_volume=m.destination_volume,
        bytes=m.bytes,
        odx=m.odx,
        start=_at(origin, start),
        finish_p50=_at(origin, start + d50),
        finish_p90=_at(origin, start + d90),
        rate_p50=rate50,
        rate_p90=rate90,
    )


def _deferred(
    estate: _Estate, outcome: _Outcome, origin: datetime, horizon: float
) -> list[DeferredMove]:
    out = []
    for index, why in sorted(outcome.deferred.items()):
        job = estate.jobs[index]
        m = job.move
        detail = _why(why, job, estate, horizon, _at(origin, horizon))
        out.append(DeferredMove(id=m.id, host=m.host, vm=m.vm, reason=why.reason, detail=detail))
    return out


def _why(why: _Deferral, job: _Job, estate: _Estate, horizon: float, end: datetime) -> str:
    if why.reason == "window":
        left = max(horizon - why.at, 0.0)
        return (
            f"window: needs {_duration(job.d90, up=True)} at P90, "
            f"only {_duration(left, up=False)} left before {end:%H:%M %Z}".rstrip()
        )
    if why.reason == "space":
        return _why_space(job, estate, why.spare)
    return _why_limit(job, estate)


def _why_space(job: _Job, estate: _Estate, spare: int) -> str:
    vol = estate.volumes[job.move.destination_volume]
    after = spare + vol.floor - job.move.reservation
    reserved = vol.free - vol.floor - spare  # by running moves and moves admitted before it
    others = f" after {_bytes(reserved)} reserved by other moves" if reserved else ""
    return (
        f"space: {vol.name} would end at {100 * after / vol.capacity:.0f}% free "
        f"({_bytes(after)}){others}, headroom {_headroom(vol)}"
    )


def _headroom(vol: VolumeState) -> str:
    percent = f"{vol.headroom_percent:g}%"
    if vol.headroom_bytes > vol.capacity * vol.headroom_percent / 100:
        return f"{_bytes(vol.headroom_bytes)} (more than {percent})"
    return percent


def _why_limit(job: _Job, estate: _Estate) -> str:
    kind, name = next(r for r in job.resources if estate.cap(r) == 0)
    if kind == "host":
        return f"limit: host {job.move.host} allows no concurrent storage moves"
    return f"limit: {estate.volumes[name].name} allows no concurrent moves as a {kind}"


def _duration(seconds: float, *, up: bool) -> str:
    minutes = math.ceil(seconds / 60) if up else math.floor(seconds / 60)
    if seconds < 60 and up:
        return f"{math.ceil(seconds)}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def _bytes(n: int) -> str:
    return f"{n / GiB:.1f} GiB"
