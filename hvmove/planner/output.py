"""The scheduler's outcome turned into a Schedule, with a sentence for every deferred move."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from hvmove.planner.estate import _Estate, _Job
from hvmove.planner.models import DeferredMove, GiB, ScheduledMove, VolumeState
from hvmove.planner.scheduler import _Deferral, _Outcome


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
