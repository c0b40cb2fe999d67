"""The batch flattened for the scheduler: jobs with their slots and rates, running moves as
held slots, each resource's limit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from hvmove.planner.models import (
    MIN_MOVE_SECONDS,
    Limits,
    PlannedMove,
    Resource,
    RunningMove,
    VolumeState,
)
from hvmove.sharing import Shares


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
    startup: float = 0.0  # typical seconds from a move's start to its copy's (its own prechecks)
    spread: float = 0.0  # how much longer one start-up in ten takes (its P90 less the typical)

    def cap(self, res: Resource) -> int:
        return self.caps[res]

    def durations(self, size: int, rate50: float, rate90: float) -> tuple[float, float]:
        return _durations(size, rate50, rate90, self.startup, self.spread)

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


def _durations(
    size: int, rate50: float, rate90: float, startup: float, spread: float
) -> tuple[float, float]:
    """P50 and P90 seconds from a move's start to its copy's end. Its start-up and its copy vary
    independently, so the P90 of the two together is the typical start-up and the median copy
    plus their two spreads combined as independent spreads combine (the root of their squares),
    not the sum of two P90s: that would plan for both being slow at once."""
    c50 = max(size / rate50, MIN_MOVE_SECONDS)
    c90 = max(size / rate90, MIN_MOVE_SECONDS)
    return startup + c50, startup + c50 + math.hypot(spread, c90 - c50)


def _job(
    index: int,
    move: PlannedMove,
    volumes: dict[str, VolumeState],
    limits: Limits,
    bandwidth: Mapping[str, float],
    startup: float,
    spread: float,
) -> _Job:
    # with shares, the rate alone: the planned rate is decided at admission (hvmove.sharing)
    cap = (
        Shares(bandwidth).alone(move.shares, math.inf)
        if move.shares
        else _volume_cap(move, volumes, limits)
    )
    rate50, rate90 = min(move.throughput.p50, cap), min(move.throughput.p90, cap)
    d50, d90 = _durations(move.bytes, rate50, rate90, startup, spread)
    return _Job(
        index=index,
        move=move,
        resources=_resources(move),
        rate50=rate50,
        rate90=rate90,
        d50=d50,
        d90=d90,
    )


def _held(run: RunningMove, now: datetime, origin: datetime, overdue_end: float) -> _Held:
    if run.copied:
        # Hyper-V's storage migration is over: MaximumStorageMigrations limits migrations
        # "performed at the same time" and hvmove's host check counts running migration jobs
        # (hyperv.md, Get-VMHost table and check 7); only its VM and the space it took are
        # still its own until verification and cleanup end
        vm = next(r for r in _resources(run) if r[0] == "vm")
        return _Held(
            end=max((now - origin).total_seconds(), 0.0),
            resources=(vm,),
            destination=run.destination_volume,
            reserved=run.reserved_bytes,
        )
    overdue = run.expected_finish <= now
    rate = run.rate or 0.0
    if rate and run.bytes_left is not None and not overdue:
        # a copy ahead of its plan keeps its P90 finish at less than the rate it was planned at:
        # what it still needs is what it holds (hvmove.sharing), the rest is free for new moves
        left = (run.expected_finish - now).total_seconds()
        rate = min(rate, max(run.bytes_left / left, 1.0))
    return _Held(
        end=overdue_end if overdue else (run.expected_finish - origin).total_seconds(),
        resources=_resources(run),
        destination=run.destination_volume,
        reserved=run.reserved_bytes,
        shares=tuple(run.shares) if run.rate else (),
        rate=rate,
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
    startup: float = 0.0,
    startup_p90: float | None = None,
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
    spread = max((startup if startup_p90 is None else startup_p90) - startup, 0.0)
    jobs = [_job(i, m, by_key, limits, bw, startup, spread) for i, m in enumerate(moves)]
    resources = {r for item in [*jobs, *held] for r in item.resources}
    caps = {r: _cap(r, limits) for r in resources}
    return _Estate(by_key, jobs, held, caps, bw, startup, spread)
