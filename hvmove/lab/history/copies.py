"""How each generated copy ran: its rate from the project's throughput model, the precheck's
estimate of it, and the steps and progress samples a real move leaves in the store."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hvmove import throughput
from hvmove.lab.history.model import MB, ODX_ETA_FACTOR, VM, GiB, Vol, odx_between
from hvmove.store import StepRecord, ThroughputSample


@dataclass
class CopyRun:
    """The numbers of one generated copy (rates in MB/s, times in seconds)."""

    size: int
    odx: bool
    actual_mbps: float
    measured_mbps: float  # what the precheck's bandwidth probe saw
    estimated_seconds: float
    copy_seconds: float


def copy_run(
    vm: VM, day: int, src: Vol, dst: Vol, vms_last: int, rng: random.Random, odx_speedup: float
) -> CopyRun:
    size = vm.bytes_at(day - 1 if day > 0 else 0, vms_last)
    odx = odx_between(src, dst)
    base = min(src.bandwidth_mbps, dst.bandwidth_mbps)
    # the same model as the lab's engine and the planner (hvmove.throughput): nominal rate (the
    # slower volume, times the ODX speedup inside one ODX array) times the copy's efficiency
    efficiency = throughput.draw_efficiency(throughput.copy_class(odx), rng)
    actual_mbps = base * (odx_speedup if odx else 1.0) * efficiency
    measured = dst.bandwidth_mbps * rng.uniform(0.85, 1.15)
    estimate_mbps = min(measured, src.bandwidth_mbps) * (ODX_ETA_FACTOR if odx else 1.0)
    return CopyRun(
        size=size,
        odx=odx,
        actual_mbps=actual_mbps,
        measured_mbps=measured,
        estimated_seconds=size / (estimate_mbps * MB),
        copy_seconds=size / (actual_mbps * MB),
    )


@dataclass
class Timeline:
    """The steps and samples of one move, and how it ended."""

    steps: list[StepRecord]
    samples: list[ThroughputSample] = field(default_factory=list)
    status: str = "completed"
    reason: str = ""
    last_step: str | None = "cleanup"
    copy_done: float | None = None
    verified: bool = True
    removed: bool = True


def timeline(
    move_id: str,
    start: datetime,
    run: CopyRun,
    dst: Vol,
    rng: random.Random,
    failure: str | None,
) -> Timeline:
    """prechecks, then (unless they failed) the copy with its samples, then cutover, verify and
    cleanup (unless the copy failed)."""
    pre_s = rng.uniform(20, 60)
    t = start + timedelta(seconds=pre_s)
    steps = [
        StepRecord(
            move_id=move_id, step="prechecks", state="completed", started_at=start, ended_at=t
        )
    ]
    if failure == "prechecks":
        return _blocked_by_space(steps, run, dst, rng)
    return _copied(move_id, steps, t, run, rng, failure)


def _blocked_by_space(
    steps: list[StepRecord], run: CopyRun, dst: Vol, rng: random.Random
) -> Timeline:
    free = dst.capacity * rng.uniform(0.02, 0.06)
    steps[0].state = "failed"
    steps[0].detail = (
        f"destination space: needs {run.size * 1.1 / GiB:,.1f} GiB with headroom, "
        f"{free / GiB:,.1f} GiB free"
    )
    return Timeline(
        steps,
        status="failed",
        reason=f"prechecks: {steps[0].detail}",
        last_step=None,
        copy_done=None,
        verified=False,
        removed=False,
    )


def _copied(
    move_id: str,
    steps: list[StepRecord],
    t: datetime,
    run: CopyRun,
    rng: random.Random,
    failure: str | None,
) -> Timeline:
    fail_at = rng.randint(35, 80) if failure == "copy" else None
    share = (fail_at or 100) / 100
    copy_done = run.copy_seconds * share
    samples = _samples(move_id, t, run, share, rng)
    copy_end = t + timedelta(seconds=copy_done)
    if fail_at is not None:
        detail = f"job failed at {fail_at} % (0x80004005): the VM stays on its source"
        steps.append(
            StepRecord(
                move_id=move_id,
                step="copy",
                state="failed",
                started_at=t,
                ended_at=copy_end,
                detail=detail,
            )
        )
        return Timeline(
            steps,
            samples,
            status="failed",
            reason=f"copy: {detail}",
            last_step="prechecks",
            copy_done=copy_done,
            verified=False,
            removed=False,
        )
    steps.append(
        StepRecord(move_id=move_id, step="copy", state="completed", started_at=t, ended_at=copy_end)
    )
    t = copy_end
    for step, lo, hi in (("cutover", 3, 15), ("verify", 10, 40), ("cleanup", 2, 20)):
        end = t + timedelta(seconds=rng.uniform(lo, hi))
        steps.append(
            StepRecord(move_id=move_id, step=step, state="completed", started_at=t, ended_at=end)
        )
        t = end
    return Timeline(steps, samples, copy_done=copy_done)


def _samples(
    move_id: str, t: datetime, run: CopyRun, share: float, rng: random.Random
) -> list[ThroughputSample]:
    """Progress samples at the percentages the copy reached (``share`` of it)."""
    samples: list[ThroughputSample] = []
    for pct in (10, 25, 50, 75, 100):
        if pct / 100 > share:
            break
        samples.append(
            ThroughputSample(
                move_id=move_id,
                at=t + timedelta(seconds=run.copy_seconds * pct / 100 * rng.uniform(0.97, 1.03)),
                percent=pct,
                bytes_done=int(run.size * pct / 100),
                mbps=run.actual_mbps * rng.uniform(0.85, 1.15),
                concurrent=1,  # one generated move a night: each copy ran alone
            )
        )
    return samples
