"""The nightly batch as a Prefect flow: plan the night, start each move (a migrate-vm subflow)
as its slots free up, re-plan with actual durations as moves finish, start nothing the window can
no longer fit, and optionally cancel a move that would overrun the hard end (the VM stays on its
source). Ends with a markdown report: moved, deferred and failed, with reasons."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from hvmove import batch, planner
from hvmove.config import Config, load
from hvmove.hyperv.client import HostClient, open_client
from hvmove.models import PrecheckReport
from hvmove.plans import ResolvedMove
from hvmove.store import Store, record_as_dict

GiB = 1024**3


@dataclass
class InFlight:
    move: planner.PlannedMove
    started: datetime
    expected_finish: datetime
    job: asyncio.Future[Any]
    cancel_requested: bool = False
    expected_p50: datetime | None = None
    rate: float | None = None  # planned P90 rate (bytes/s) with shared bandwidth


@task(name="plan-prechecks", cache_policy=NO_CACHE, persist_result=False)
def precheck_task(cfg: Config, moves: list[ResolvedMove], store: Store) -> list[PrecheckReport]:
    return batch.precheck_all(cfg, moves, reserve=False, store=store)


def _now() -> datetime:
    return datetime.now(UTC)


def _subflow_kwargs(
    cfg: Config, move: ResolvedMove, batch_id: str, poll_seconds: float
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
    }


def _run_subflow(kwargs: dict[str, Any]) -> Any:
    """One move in its own thread and event loop: the steps block, so moves run side by side
    only in threads."""
    from flows.migrate_vm import migrate_vm

    return asyncio.run(migrate_vm(**kwargs, return_state=True))


def _in_thread(kwargs: dict[str, Any]) -> asyncio.Future[Any]:
    """``_run_subflow`` in a thread of its own, with this flow's context copied (so the run is
    this flow's subflow). Not asyncio.to_thread: its shared pool has min(32, CPUs + 4) threads,
    so on a small worker the seventh move the plan starts would wait, unplanned, for a thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def work() -> None:
        try:
            result = ctx.run(_run_subflow, kwargs)
        except BaseException as exc:  # handed to the awaiting flow, which records it
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=work, name=f"move-{kwargs['vm']}", daemon=True).start()
    return future


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


@flow(name="nightly-migrations", flow_run_name="night of {plan}")
async def nightly(
    plan: str,
    config: str = "hvmove.yaml",
    window: str | None = None,
    timezone: str | None = None,
    cancel_overrun: bool = False,
    poll_seconds: float = 5.0,
    batch_id: str | None = None,
    margin_minutes: float | None = None,
) -> dict[str, Any]:
    """PLAN is a plan file; WINDOW 'HH:MM-HH:MM' in TIMEZONE (defaults from the config), or
    'now' for a window that starts now and lasts a day; no move is planned to end (at P90)
    later than MARGIN_MINUTES before the window's end."""
    log = get_run_logger()
    cfg = load(config)
    store = Store(cfg.store_url())
    d = cfg.defaults
    batch_id = batch_id or _now().strftime("night-%Y%m%dT%H%M")
    margin = timedelta(
        minutes=d.window_margin_minutes if margin_minutes is None else margin_minutes
    )
    win = batch.any_window(window or d.window, _now(), timezone or d.timezone, margin)
    moves, inventories = batch.load_and_resolve(cfg, plan, store)
    reports = precheck_task(cfg, moves, store)
    inputs = batch.night_inputs(cfg, moves, reports, inventories, store)
    assert inputs.limits is not None
    log.info(
        "window %s - %s (%s); %d moves to plan, %d blocked, %d already done",
        win.start.isoformat(timespec="minutes"),
        win.end.isoformat(timespec="minutes"),
        timezone or d.timezone,
        len(inputs.moves),
        len(inputs.blocked),
        len(inputs.already_done),
    )
    pending = {m.id: m for m in inputs.moves}
    flying: dict[str, InFlight] = {}
    consumed: dict[str, int] = {}  # destination bytes taken by finished moves
    results: dict[str, dict[str, Any]] = {}
    deferred: dict[str, str] = {}
    clients: dict[str, HostClient] = {}
    first_plan: planner.Schedule | None = None
    for mid in inputs.finish_only:  # verify and clean up what a dead run switched already
        kwargs = _subflow_kwargs(cfg, inputs.by_id[mid], batch_id, poll_seconds)
        job = _in_thread(kwargs)
        await asyncio.wait([job])
        results[mid] = _outcome(store, inputs.by_id[mid], job)
        log.info(
            "%s: finished the steps a previous run left: %s",
            inputs.by_id[mid].vm.name,
            results[mid]["status"],
        )
    try:
        while pending or flying:
            now = _now()
            sched = planner.plan(
                list(pending.values()),
                _volumes(inputs.volumes, consumed),
                inputs.limits,
                win,
                now,
                running=[_running(f, now) for f in flying.values()],
                bandwidth=inputs.bandwidth,
            )
            if first_plan is None:
                first_plan = sched
                _publish_plan(sched)
            deferred = {m.id: m.detail for m in sched.deferred}
            for due in sched.due(now):
                move = pending.pop(due.id)
                kwargs = _subflow_kwargs(cfg, inputs.by_id[due.id], batch_id, poll_seconds)
                job = _in_thread(kwargs)
                flying[due.id] = InFlight(
                    move, now, due.finish_p90, job, expected_p50=due.finish_p50, rate=due.rate_p90
                )
                log.info(
                    "start %s on %s (%.1f GiB, P90 finish %s)",
                    move.vm,
                    move.host,
                    move.bytes / GiB,
                    due.finish_p90.isoformat(timespec="seconds"),
                )
            if not flying:
                if not sched.admitted:
                    break  # nothing running and nothing more fits: the rest waits for another night
                wait = (min(m.start for m in sched.admitted) - now).total_seconds()
                await asyncio.sleep(max(0.5, min(wait, 60)))
                continue
            done, _ = await asyncio.wait(
                [f.job for f in flying.values()],
                timeout=poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for mid in [k for k, f in flying.items() if f.job in done]:
                finished = flying.pop(mid)
                results[mid] = _finish(store, inputs.by_id[mid], finished, consumed)
                _learn(pending, inputs, store)
                log.info(
                    "%s on %s: %s", finished.move.vm, finished.move.host, results[mid]["status"]
                )
            if cancel_overrun:
                _cancel_overruns(cfg, clients, flying, inputs, win, log)
    finally:
        for c in clients.values():
            c.close()
    for mid in pending:
        deferred.setdefault(mid, "not started: the window could not fit it")
    summary = _summary(inputs, results, deferred, first_plan, win)
    _publish_report(summary, batch_id)
    return summary


def _volumes(
    volumes: list[planner.VolumeState], consumed: dict[str, int]
) -> list[planner.VolumeState]:
    return [
        v.model_copy(update={"free": max(0, v.free - consumed.get(v.key, 0))})
        if consumed.get(v.key)
        else v
        for v in volumes
    ]


def _running(f: InFlight, now: datetime) -> planner.RunningMove:
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
    )


def _outcome(store: Store, move: ResolvedMove, job: asyncio.Future[Any]) -> dict[str, Any]:
    """The move's row from the store (its record says which step it reached)."""
    try:
        state = job.result()
        message = state.message if state is not None else ""
    except Exception as exc:  # the subflow raised: the record has the step and reason
        message = str(exc)
    record = store.latest(move.request.host, move.vm.id)
    row = (
        record_as_dict(record, store.step_states(record.id))
        if record
        else {"vm": move.vm.name, "host": move.request.host, "status": "failed", "reason": message}
    )
    row["message"] = message
    return row


def _finish(
    store: Store, move: ResolvedMove, f: InFlight, consumed: dict[str, int]
) -> dict[str, Any]:
    row = _outcome(store, move, f.job)
    # what the plan expected, for the night's report of ETA accuracy (seconds from the start)
    row["planned_p50_s"] = (f.expected_p50 - f.started).total_seconds() if f.expected_p50 else None
    row["planned_p90_s"] = (f.expected_finish - f.started).total_seconds()
    row["planned_finish_p90"] = f.expected_finish.isoformat()
    if row["status"] == "completed":
        key = f.move.destination_volume
        consumed[key] = consumed.get(key, 0) + f.move.reservation
    return row


def _learn(
    pending: dict[str, planner.PlannedMove], inputs: batch.NightInputs, store: Store
) -> None:
    """Re-plan with what the night showed: the moves still waiting get their rates re-learned
    from the store, which now holds the copies that just finished (hvmove.learning)."""
    inputs.moves = list(pending.values())
    batch.relearn(inputs, store)
    pending.update({m.id: m for m in inputs.moves})


def _cancel_overruns(
    cfg: Config,
    clients: dict[str, HostClient],
    flying: dict[str, InFlight],
    inputs: batch.NightInputs,
    win: planner.Window,
    log: Any,
) -> None:
    """Stop a move whose own progress says it ends after the hard window end: Hyper-V then
    leaves the VM on its source and removes the partial destination."""
    now = _now()
    for f in flying.values():
        if f.cancel_requested:
            continue
        host = f.move.host
        client = clients.get(host)
        if client is None:
            client = clients[host] = open_client(cfg, host)
        vm_id = inputs.by_id[f.move.id].vm.id
        with contextlib.suppress(Exception):
            job = client.move_status(vm_id).job
            if job is None or not job.running or job.percent_complete <= 0:
                continue
            left = job.elapsed_seconds * (100 - job.percent_complete) / job.percent_complete
            if now + timedelta(seconds=left) > win.end:
                client.stop_move(vm_id)
                f.cancel_requested = True
                log.warning(
                    "cancelled %s on %s: %d%% done, would end %s after the window",
                    f.move.vm,
                    host,
                    job.percent_complete,
                    (now + timedelta(seconds=left)).isoformat(timespec="seconds"),
                )


def _summary(
    inputs: batch.NightInputs,
    results: dict[str, dict[str, Any]],
    deferred: dict[str, str],
    first: planner.Schedule | None,
    win: planner.Window,
) -> dict[str, Any]:
    moved = [r for r in results.values() if r["status"] == "completed"]
    failed = [r for r in results.values() if r["status"] != "completed"]
    seconds = sum(r["copy_seconds"] or 0 for r in moved)
    total = sum(r["bytes"] or 0 for r in moved)
    return {
        "window": [win.start.isoformat(), win.end.isoformat()],
        "moved": [
            {
                "vm": r["vm"],
                "host": r["host"],
                "bytes": r["bytes"],
                "seconds": r["copy_seconds"],
                "planned_p50_s": r.get("planned_p50_s"),
                "planned_p90_s": r.get("planned_p90_s"),
                "planned_finish_p90": r.get("planned_finish_p90"),
            }
            for r in moved
        ],
        "failed": [
            {"vm": r["vm"], "host": r["host"], "reason": r.get("reason") or r.get("message", "")}
            for r in failed
        ],
        "deferred": [
            {"vm": inputs.by_id[m].vm.name, "host": inputs.by_id[m].request.host, "reason": why}
            for m, why in deferred.items()
        ],
        "blocked": [
            {"vm": inputs.by_id[m].vm.name, "host": inputs.by_id[m].request.host, "reason": why}
            for m, why in inputs.blocked.items()
        ],
        "already_done": [inputs.by_id[m].vm.name for m in inputs.already_done],
        "bytes": total,
        "mean_mbps": round(total / seconds / 1e6, 1) if seconds else None,
        "planned_makespan_s": round(first.makespan_seconds, 1) if first else None,
    }


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
    create_table_artifact(
        key="nightly-plan", table=rows, description="The night's schedule", _sync=True
    )


def _publish_report(summary: dict[str, Any], batch_id: str) -> None:
    lines = [
        f"# Night {batch_id}",
        "",
        f"Window {summary['window'][0]} - {summary['window'][1]}  ",
        f"Moved {len(summary['moved'])} VM(s), {summary['bytes'] / GiB:,.1f} GiB, mean "
        f"{summary['mean_mbps'] or 0:,.0f} MB/s",
        "",
    ]
    for title, key in (
        ("Moved", "moved"),
        ("Deferred", "deferred"),
        ("Blocked", "blocked"),
        ("Failed", "failed"),
    ):
        lines += [f"## {title} ({len(summary[key])})", ""]
        for item in summary[key]:
            extra = (
                f"{(item.get('bytes') or 0) / GiB:,.1f} GiB in {item.get('seconds') or 0:,.0f} s"
                if key == "moved"
                else item.get("reason", "")
            )
            lines.append(f"- **{item['vm']}** on {item['host']}: {extra}")
        lines.append("")
    create_markdown_artifact(
        key="nightly-report", markdown="\n".join(lines), description=f"Night {batch_id}", _sync=True
    )
