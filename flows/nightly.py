"""The nightly batch as a Prefect flow: plan the night, start each move (a migrate-vm run, see
flows/fanout.py) as its slots free up, re-plan with actual durations as moves finish, start
nothing the window can no longer fit, and optionally cancel a move that would overrun the hard
end (the VM stays on its source). Ends with a markdown report, also when it crashes, and a
state that tells the truth: Failed when a move failed, "Completed with N blocked" when moves
waited, plain Completed only when every admitted move completed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.urls import url_for

from flows.fanout import Handle, Launcher, launcher
from hvmove import batch, learning, planner, planning, reports, runinfo
from hvmove.cancel import OverrunGuard
from hvmove.config import Config, load
from hvmove.models import PrecheckReport
from hvmove.plans import ResolvedMove
from hvmove.store import CopyProgress, Store, record_as_dict
from tasks._common import label_run
from tasks.cancel import stop_night_on_cancel

GiB = 1024**3


@dataclass
class InFlight:
    move: planner.PlannedMove
    started: datetime
    expected_finish: datetime
    job: Handle
    cancel_requested: bool = False
    expected_p50: datetime | None = None
    rate: float | None = None  # planned P90 rate (bytes/s) with shared bandwidth
    copy_seen: bool = False  # its copy's start is known (and counted in the startups)
    # started ahead of the window (it waits in its copy step): its start-up, one of a burst of
    # runs and prechecks side by side, is not one a move started mid-night has
    early: bool = False


@task(name="plan-prechecks", cache_policy=NO_CACHE, persist_result=False)
def precheck_task(cfg: Config, moves: list[ResolvedMove], store: Store) -> list[PrecheckReport]:
    return batch.precheck_all(cfg, moves, reserve=False, store=store)


def _now() -> datetime:
    return datetime.now(UTC)


def _scheduled_start() -> datetime:
    ctx = FlowRunContext.get()
    start = ctx.flow_run.expected_start_time if ctx and ctx.flow_run else None
    # a plain aware datetime: Prefect's own DateTime type does not mix with stdlib arithmetic
    return datetime.fromtimestamp(start.timestamp(), UTC) if start else _now()


def night_name() -> str:
    return batch.batch_id_for(_scheduled_start())


def move_params(
    cfg: Config,
    move: ResolvedMove,
    batch_id: str,
    poll_seconds: float,
    not_before: datetime | None = None,
    measured: float | None = None,
) -> dict[str, Any]:
    req = move.request
    return {
        "host": req.host,
        "vm": move.vm.name,
        "mode": req.mode,
        "destination": req.destination,
        "virtual_machine_path": req.virtual_machine_path,
        "snapshot_file_path": req.snapshot_file_path,
        "smart_paging_file_path": req.smart_paging_file_path,
        "vhds": [v.model_dump() for v in req.vhds] or None,
        "headroom_percent": req.headroom_percent,
        "probe_mib": req.probe_mib,
        "keep_source_until_verified": req.keep_source_until_verified,
        "config": str(cfg.path),
        "batch": batch_id,
        "poll_seconds": poll_seconds,
        **({"not_before": not_before.isoformat()} if not_before else {}),
        # unrounded: a slow share rounded to 0.0 would fail the parameter's "greater than 0"
        **({"measured_mbps": measured / 1e6} if measured else {}),
    }


@flow(
    name="nightly-migrations",
    flow_run_name=night_name,
    task_runner=ThreadPoolTaskRunner(max_workers=64),
    on_cancellation=[stop_night_on_cancel],
)
def nightly(
    plan: str,
    config: str = "hvmove.yaml",
    window: str | None = None,
    cancel_overrun: bool = False,
    poll_seconds: float = 5.0,
    batch_id: str | None = None,
    margin_minutes: float | None = None,
    move_deployment: str | None = None,
) -> State:
    """PLAN is a plan file; WINDOW 'HH:MM-HH:MM' in the config's time zone (default: the
    config's window), or 'now' / 'now+MINUTES'; no move is planned to end (at P90) later than
    MARGIN_MINUTES before the window's end. MOVE_DEPLOYMENT (e.g. 'migrate-vm/migrate-vm') runs
    each move as a run of that deployment, on any worker of its pool; empty: inside this run."""
    log = get_run_logger()
    cfg = load(config)
    store = Store(cfg.store_url())
    scheduled = _scheduled_start()
    batch_id = batch_id or batch.batch_id_for(scheduled)
    late = _too_late(cfg, window, scheduled, margin_minutes)
    if late:
        log.warning(late)
        return Cancelled(name="Skipped", message=late)
    launch = launcher(move_deployment, cfg)
    night = planning.prepare(
        cfg,
        plan,
        store,
        now=_now(),
        window_text=window,
        margin_minutes=margin_minutes,
        prechecks=precheck_task,
        window_at=scheduled,
    )
    inputs, win = night.inputs, night.window
    log.info(
        "batch %s, window %s - %s (%s); %d moves to plan, %d blocked, %d already done",
        batch_id,
        win.start.isoformat(timespec="minutes"),
        win.end.isoformat(timespec="minutes"),
        night.zone,
        len(inputs.moves),
        len(inputs.blocked),
        len(inputs.already_done),
    )
    label_run(
        name=runinfo.night_run_name(
            _local(win.start, night.zone), _local(win.end, night.zone), len(inputs.moves)
        ),
        tags=[runinfo.batch_tag(batch_id)],
    )
    _publish_plan(night.schedule)
    results: dict[str, dict[str, Any]] = {}
    deferred: dict[str, str] = {}
    error: str | None = None
    try:
        _run_night(
            cfg, store, night, launch, batch_id, poll_seconds, cancel_overrun, results, deferred
        )
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:  # a crash mid-night still leaves the night's report
        summary = _summary(night, results, deferred, error)
        create_markdown_artifact(
            key="nightly-report",
            markdown=reports.night_markdown(summary, batch_id),
            description=f"Night {batch_id}",
        )
        create_table_artifact(
            key="nightly-results",
            table=runinfo.results_table(list(results.values())),
            description=f"Night {batch_id}: each move's outcome (sortable)",
        )
    verdict = reports.night_verdict(summary)
    if verdict.kind == "failed":
        return Failed(name=verdict.name, message=verdict.message, data=summary)
    return Completed(name=verdict.name, message=verdict.message, data=summary)


def _too_late(
    cfg: Config, window: str | None, scheduled: datetime, margin_minutes: float | None
) -> str | None:
    """A night that starts after its window closed (a worker was down) is skipped with a
    reason, rather than waiting, while Running, for the next window."""
    if window and window.startswith("now"):
        return None
    win = planning.window(cfg, window, scheduled, margin_minutes)
    now = _now()
    if now < win.last_finish:
        return None
    return (
        f"skipped: started {now.isoformat(timespec='minutes')}, after the window it was "
        f"scheduled for ({win.start.isoformat(timespec='minutes')} - "
        f"{win.end.isoformat(timespec='minutes')}, {cfg.defaults.timezone}) closed; the next "
        "scheduled night takes the plan"
    )


def _run_night(
    cfg: Config,
    store: Store,
    night: planning.Night,
    launch: Launcher,
    batch_id: str,
    poll_seconds: float,
    cancel_overrun: bool,
    results: dict[str, dict[str, Any]],
    deferred: dict[str, str],
) -> None:
    inputs = night.inputs
    run = _Launch(cfg, store, inputs, launch, batch_id, poll_seconds)
    progress = _Progress(len(inputs.finish_only) + len(inputs.moves), results)
    _finish_left_over(run, results, progress)
    pending = {m.id: m for m in inputs.moves}
    guard = OverrunGuard(cfg)
    try:
        _start_and_follow(run, night, pending, cancel_overrun, guard, results, deferred, progress)
    finally:
        guard.close()
    for mid in pending:
        deferred.setdefault(mid, "not started: the window could not fit it")


@dataclass
class _Launch:
    """What starting one of the night's moves needs: each is a migrate-vm run (flows/fanout.py)."""

    cfg: Config
    store: Store
    inputs: batch.NightInputs
    launch: Launcher
    batch_id: str
    poll_seconds: float

    def start(self, move_id: str, not_before: datetime | None = None) -> Handle:
        move = self.inputs.by_id[move_id]
        # the night's own probe of the destination: moves started together do not probe again
        measured = self.inputs.probes.get(move_id)
        params = move_params(self.cfg, move, self.batch_id, self.poll_seconds, not_before, measured)
        return self.launch.start(params)


def _finish_left_over(
    run: _Launch, results: dict[str, dict[str, Any]], progress: _Progress
) -> None:
    """Verify and clean up what a dead run switched already, before anything new starts."""
    log = get_run_logger()
    for mid in run.inputs.finish_only:
        job = run.start(mid)
        while not job.done():
            time.sleep(0.2)
        results[mid] = _outcome(run.store, run.inputs.by_id[mid], job)
        progress.update()
        log.info(
            "%s: finished what a previous run left: %s",
            run.inputs.by_id[mid].vm.name,
            results[mid]["status"],
        )


def _start_and_follow(
    run: _Launch,
    night: planning.Night,
    pending: dict[str, planner.PlannedMove],
    cancel_overrun: bool,
    guard: OverrunGuard,
    results: dict[str, dict[str, Any]],
    deferred: dict[str, str],
    progress: _Progress,
) -> None:
    """Re-plan, start what is due, wait for a move to end, learn from it; until every move ran
    or nothing more fits the window (what is left stays in ``pending``)."""
    inputs, win = night.inputs, night.window
    flying: dict[str, InFlight] = {}
    consumed: dict[str, int] = {}  # destination bytes taken by finished moves
    startups: list[float] = []  # seconds from starting a move to its copy beginning, tonight
    copies: dict[str, CopyProgress] = {}  # the flying moves' copies, as last seen
    while pending or flying:
        now = _now()
        typical, slow = learning.startup_allowance(startups, night.startup_prior)
        sched = planner.plan(
            list(pending.values()),
            _volumes(inputs.volumes, consumed),
            night.limits,
            win,
            now,
            running=[_running(f, copies.get(mid)) for mid, f in flying.items()],
            bandwidth=inputs.bandwidth,
            startup=typical,
            startup_p90=slow,
        )
        deferred.clear()
        deferred.update({m.id: m.detail for m in sched.deferred})
        _start_due(run, sched, now, win.start, pending, flying)
        if not flying:
            if not sched.admitted:
                break  # nothing running and nothing more fits: the rest waits for another night
            wait = (min(m.start for m in sched.admitted) - now).total_seconds()
            time.sleep(max(0.5, min(wait, 60)))
            continue
        # wake for a run that ends, or as soon as a copy does: its share and slots are free
        # then, and its run's cutover, verification and cleanup take another second or more
        over = run.store.copies_over(run.batch_id)
        _wait_any(
            [f.job for f in flying.values()],
            run.poll_seconds,
            lambda over=over: run.store.copies_over(run.batch_id) != over,
        )
        # copies ahead of their plan, or over, free bandwidth and slots before their runs end
        copies = _copies(run.store, run.batch_id, inputs, flying)
        _observe_startups(flying, copies, startups)
        _collect_finished(run, pending, flying, consumed, results, progress)
        if cancel_overrun:
            _cancel_overruns(guard, flying, inputs, win)


def _start_due(
    run: _Launch,
    sched: planner.Schedule,
    now: datetime,
    window_start: datetime,
    pending: dict[str, planner.PlannedMove],
    flying: dict[str, InFlight],
) -> None:
    """Start the moves due now. Before the window, the moves due at its start are started at
    once and wait in their own run, prechecks done, for the window: their copies begin at its
    start instead of after a burst of run start-ups and prechecks inside it."""
    log = get_run_logger()
    early = now < window_start
    at = window_start if early else now
    for due in sched.due(at):
        move = pending.pop(due.id)
        job = run.start(due.id, not_before=window_start if early else None)
        flying[due.id] = InFlight(
            move,
            at,
            due.finish_p90,
            job,
            expected_p50=due.finish_p50,
            rate=due.rate_p90,
            early=early,
        )
        log.info(
            "start %s on %s (%.1f GiB, P90 finish %s)",
            move.vm,
            move.host,
            move.bytes / GiB,
            due.finish_p90.isoformat(timespec="seconds"),
        )


def _collect_finished(
    run: _Launch,
    pending: dict[str, planner.PlannedMove],
    flying: dict[str, InFlight],
    consumed: dict[str, int],
    results: dict[str, dict[str, Any]],
    progress: _Progress,
) -> None:
    """Each move that ended: its row, the space it took, and the rates re-learned from it."""
    log = get_run_logger()
    for mid in [k for k, f in flying.items() if f.job.done()]:
        finished = flying.pop(mid)
        results[mid] = _outcome(run.store, run.inputs.by_id[mid], finished.job)
        results[mid].update(_planned(finished))
        progress.update()
        if results[mid]["status"] == "completed":
            key = finished.move.destination_volume
            consumed[key] = consumed.get(key, 0) + finished.move.reservation
        _learn(pending, run.inputs, run.store)
        log.info("%s on %s: %s", finished.move.vm, finished.move.host, results[mid]["status"])


class _Progress:
    """'N of M moves finished', as a progress artifact the night updates as moves end."""

    def __init__(self, total: int, results: dict[str, dict[str, Any]]) -> None:
        self.total, self.results = total, results
        self.id = create_progress_artifact(
            0.0, key="nightly-progress", description=runinfo.progress_line(0, total)
        )

    def update(self) -> None:
        done = len(self.results)
        update_progress_artifact(
            self.id,
            progress=100.0 * done / self.total if self.total else 100.0,
            description=runinfo.progress_line(done, self.total),
        )


def _local(at: datetime, zone: str) -> datetime:
    try:
        return at.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return at


WAKE_CHECK_S = 0.2  # how often the night looks for a run or a copy that ended


def _wait_any(
    jobs: list[Handle], timeout: float, changed: Callable[[], bool] = lambda: False
) -> None:
    """Until a run ends, ``changed()`` says something else did, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(j.done() for j in jobs) or changed():
            return
        time.sleep(min(WAKE_CHECK_S, max(0.0, deadline - time.monotonic())))


def _volumes(
    volumes: list[planner.VolumeState], consumed: dict[str, int]
) -> list[planner.VolumeState]:
    return [
        v.model_copy(update={"free": max(0, v.free - consumed.get(v.key, 0))})
        if consumed.get(v.key)
        else v
        for v in volumes
    ]


def _running(f: InFlight, copy: CopyProgress | None) -> planner.RunningMove:
    left = None
    if copy is not None and copy.percent is not None:
        # Hyper-V's whole percent, rounded down: never fewer bytes left than there are
        left = f.move.bytes * (100 - copy.percent) // 100
    return planner.RunningMove(
        id=f.move.id,
        host=f.move.host,
        vm=f.move.vm,
        source_volumes=f.move.source_volumes,
        destination_volume=f.move.destination_volume,
        expected_finish=f.expected_finish,
        reserved_bytes=f.move.reservation,
        shares=f.move.shares,
        rate=f.rate,
        bytes_left=left,
        copied=copy is not None and copy.over,
    )


def _copies(
    store: Store, batch_id: str, inputs: batch.NightInputs, flying: dict[str, InFlight]
) -> dict[str, CopyProgress]:
    """Each flying move's copy as the store saw it last (none yet: its run has not begun it)."""
    seen = store.night_copies(batch_id)
    out: dict[str, CopyProgress] = {}
    for mid, f in flying.items():
        copy = seen.get((f.move.host.lower(), inputs.by_id[mid].vm.id))
        if copy is not None:
            out[mid] = copy
    return out


def _observe_startups(
    flying: dict[str, InFlight], copies: dict[str, CopyProgress], startups: list[float]
) -> None:
    """How long moves took from their start to their copy's (their run's own prechecks and
    orchestration): the planner allows that much before every new move's copy."""
    for mid, f in flying.items():
        copy = copies.get(mid)
        if f.copy_seen or copy is None or copy.began is None:
            continue
        f.copy_seen = True
        if not f.early:
            startups.append(max(0.0, (copy.began - f.started).total_seconds()))


def _planned(f: InFlight) -> dict[str, Any]:
    """What the plan expected of a move (seconds from its start), for the ETA accuracy."""
    return {
        "planned_p50_s": (f.expected_p50 - f.started).total_seconds() if f.expected_p50 else None,
        "planned_p90_s": (f.expected_finish - f.started).total_seconds(),
        "planned_finish_p90": f.expected_finish.isoformat(),
    }


def _outcome(store: Store, move: ResolvedMove, job: Handle) -> dict[str, Any]:
    """The move's row from the store (its record says which step it reached)."""
    message = job.message()
    record = store.latest(move.request.host, move.vm.id)
    row = (
        record_as_dict(record, store.step_states(record.id))
        if record
        else {"vm": move.vm.name, "host": move.request.host, "status": "failed", "reason": message}
    )
    if row["status"] in ("pending", "running"):  # the run ended but never recorded an end
        row["status"], row["reason"] = "failed", message or "the move's run ended unrecorded"
    row["message"] = message
    if row.get("flow_run_id"):  # the night's report links each move to its run
        row["url"] = url_for("flow-run", obj_id=row["flow_run_id"])
    return row


def _learn(
    pending: dict[str, planner.PlannedMove], inputs: batch.NightInputs, store: Store
) -> None:
    """Re-plan with what the night showed: the moves still waiting get their rates re-learned
    from the store, which now holds the copies that just finished, with the concurrency of each
    of their samples (hvmove.learning)."""
    inputs.moves = list(pending.values())
    batch.relearn(inputs, store)
    pending.update({m.id: m for m in inputs.moves})


def _cancel_overruns(
    guard: OverrunGuard, flying: dict[str, InFlight], inputs: batch.NightInputs, win: planner.Window
) -> None:
    log = get_run_logger()
    now = _now()
    for f in flying.values():
        if f.cancel_requested:
            continue
        try:
            line = guard.check(f.move.host, inputs.by_id[f.move.id].vm.id, f.move.vm, win.end, now)
        except Exception as exc:  # said, not swallowed: the move may run past the window
            log.error(
                "could not check or stop %s on %s for the window's end: %s",
                f.move.vm,
                f.move.host,
                exc,
            )
            continue
        if line:
            f.cancel_requested = True
            log.warning(line)


def _summary(
    night: planning.Night,
    results: dict[str, dict[str, Any]],
    deferred: dict[str, str],
    error: str | None,
) -> dict[str, Any]:
    by_id = night.inputs.by_id

    def named(items: dict[str, str]) -> list[dict[str, str]]:
        return [
            {"vm": by_id[m].vm.name, "host": by_id[m].request.host, "reason": why}
            for m, why in items.items()
        ]

    first = night.schedule
    return reports.night_summary(
        window=(night.window.start.isoformat(), night.window.end.isoformat()),
        results=list(results.values()),
        deferred=named(deferred),
        blocked=named(night.inputs.blocked),
        already_done=[by_id[m].vm.name for m in night.inputs.already_done],
        planned_makespan_s=round(first.makespan_seconds, 1) if first else None,
        error=error,
    )


def _publish_plan(s: planner.Schedule) -> None:
    rows = [
        {
            "vm": m.vm,
            "host": m.host,
            "GiB": round(m.bytes / GiB, 1),
            "start": m.start.isoformat(timespec="seconds"),
            "finish P90": m.finish_p90.isoformat(timespec="seconds"),
            "ODX": m.odx,
        }
        for m in s.admitted
    ]
    rows += [
        {
            "vm": m.vm,
            "host": m.host,
            "GiB": None,
            "start": "deferred",
            "finish P90": m.detail,
            "ODX": None,
        }
        for m in s.deferred
    ]
    create_table_artifact(key="nightly-plan", table=rows, description="The night's schedule")
