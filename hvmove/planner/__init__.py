"""Nightly-batch planner: which moves start when, and which wait for another night.

A pure function of its inputs (no Prefect, no I/O): the nightly flow calls ``plan`` at the start of
the window and again each time a move finishes, passing the moves still waiting, fresh volume
figures, the moves in flight and the current time, and starts the moves that are due.

The model, in short:

- **Durations.** A move copies ``bytes`` at a rate fixed when it is admitted; its P90 duration is
  ``bytes / rate.p90`` (the pessimistic rate) and that is what every admission decision uses. A
  rate never changes once admitted, so admitting a later move can never push an earlier one past
  the window end.
- **Sharing.** A move with ``shares`` (the nightly flow gives every move its volumes, or its ODX
  array's offload engine: ``hvmove.learning``) draws on bandwidth resources whose capacities
  ``plan`` gets as ``bandwidth``. Concurrent copies split a resource max-min fairly
  (``hvmove.throughput``), so each move gets a planned rate at admission that every resource can
  give it beside the moves already planned there, and keeps it whatever starts later
  (``hvmove.sharing``). A move without ``shares`` uses the older slot model: a volume's measured
  bandwidth (read for sources, write for destinations) split evenly between as many moves as its
  concurrency limit allows; ODX copies there use only their own estimate and still take a slot.
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
(longest first, longest first on the most loaded resource, most bytes per slot-second, shortest
first, ...), then each host's moves re-sorted by each rule in the best order's places, then a
few seeded reorderings; the schedule that admits the most bytes, then finishes first, wins.
``lower_bound`` is the matching bound: no schedule in this model can finish before the busiest
resource's work (move-seconds at the planned rates) divided by its slots, which for a volume whose
moves are all bandwidth-bound is its bytes over its bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from hvmove.planner.estate import _estate
from hvmove.planner.models import (
    FEW_SAMPLES_PESSIMISM,
    IMPROVEMENT_ROUNDS,
    MIN_MOVE_SECONDS,
    TAIL_SAMPLES,
    DeferReason,
    DeferredMove,
    Limits,
    PlannedMove,
    RunningMove,
    Schedule,
    ScheduledMove,
    Throughput,
    VolumeState,
    Window,
)
from hvmove.planner.output import _admitted, _deferred
from hvmove.planner.scheduler import _best_order, _loads, _simulate

__all__ = [
    "FEW_SAMPLES_PESSIMISM",
    "IMPROVEMENT_ROUNDS",
    "MIN_MOVE_SECONDS",
    "TAIL_SAMPLES",
    "DeferReason",
    "DeferredMove",
    "Limits",
    "PlannedMove",
    "RunningMove",
    "Schedule",
    "ScheduledMove",
    "Throughput",
    "VolumeState",
    "Window",
    "fifo_makespan",
    "lower_bound",
    "plan",
]


def plan(
    moves: Sequence[PlannedMove],
    volumes: Sequence[VolumeState],
    limits: Limits,
    window: Window,
    now: datetime,
    running: Sequence[RunningMove] = (),
    *,
    bandwidth: Mapping[str, float] | None = None,
    startup: float = 0.0,
    startup_p90: float | None = None,
) -> Schedule:
    """Order the batch: admitted moves with planned start and finishes, the rest deferred.

    ``startup``: typical seconds between starting a move and its copy beginning (its run's own
    prechecks and orchestration, as the night observes them), and ``startup_p90`` one start-up
    in ten (default: the same); every new move's finishes include them (``_Estate.durations``).

    Raises ``ValueError`` for inconsistent inputs (a volume or host limit missing, an id twice):
    those are bugs upstream, not reasons to skip one VM.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # every duration is real time: UTC, whatever zone the window was given in
    origin = max(now, window.start).astimezone(UTC)
    horizon = (window.last_finish - origin).total_seconds()
    # an overdue move holds its slots through the window: nobody knows when it will end
    estate = _estate(
        moves,
        volumes,
        limits,
        running,
        now,
        origin,
        max(horizon, 0.0),
        bandwidth=bandwidth,
        startup=startup,
        startup_p90=startup_p90,
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
