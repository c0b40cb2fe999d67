"""Copy/mirror as a Prefect task: starts or attaches to the move and follows it in a progress
artifact, with MB/s and ETA in the log every few seconds and in `hvmove.move.progress` events
(at each 10 % and at most once a minute) for the automations."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from hvmove import cancel, pipeline
from hvmove.hyperv.client import HostClient
from hvmove.models import MoveRequest
from hvmove.prechecks import duration
from hvmove.progress import ProgressGate
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, emit, only_transient, recorded


@task(
    name="copy",
    task_run_name="copy-{request.vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def copy_task(
    client: HostClient,
    store: Store,
    move_id: str,
    request: MoveRequest,
    retain_source: bool = True,
    poll_s: float = 2.0,
    log_every_s: float = 5.0,
    silence_s: float = 900.0,
    not_before: datetime | None = None,
) -> dict:
    log = get_run_logger()
    if not_before is not None and not_before > datetime.now(UTC):
        log.info(
            "prechecks passed; the copy starts at %s", not_before.isoformat(timespec="seconds")
        )
    with recorded(store, move_id, "copy") as set_state:
        artifact = create_progress_artifact(
            progress=0.0,
            description=f"Copy of {request.vm} on {request.host} -> "
            f"{request.destination_summary()}",
        )
        last_log = shown_at = 0.0

        shown = -1
        gate = ProgressGate()
        record = store.get(move_id)

        def on_progress(p: pipeline.Progress) -> None:
            nonlocal last_log, shown, shown_at
            # one API write per change, and at most as often as the log line: a night of dozens
            # of copies polling every second made the server's SQLite busy (503s failed moves)
            now = time.monotonic()
            if artifact is not None and p.percent != shown and now - shown_at >= log_every_s:
                update_progress_artifact(artifact_id=artifact, progress=float(p.percent))
                shown, shown_at = p.percent, now
            if gate.due(p.percent, time.monotonic()):
                emit(
                    "hvmove.move.progress",
                    record.host,
                    request.vm,
                    record.vm_id,
                    move_id=move_id,
                    percent=p.percent,
                    mbps=round(p.mbps, 1) if p.mbps is not None else None,
                    eta_seconds=round(p.eta_seconds) if p.eta_seconds is not None else None,
                    bytes_done=p.bytes_done,
                )
            if time.monotonic() - last_log >= log_every_s or p.percent >= 100:
                last_log = time.monotonic()
                rate = f"{p.mbps:,.0f} MB/s" if p.mbps is not None else "- MB/s"
                log.info(
                    "%s %3d%%  %s  ETA %s", p.job_state, p.percent, rate, duration(p.eta_seconds)
                )

        try:
            result = pipeline.run_copy(
                client,
                store,
                move_id,
                request,
                retain_source=retain_source,
                poll_s=poll_s,
                on_progress=on_progress,
                silence_s=silence_s,
                not_before=not_before,
            )
        except pipeline.StepFailed:
            # the job ended because hvmove asked it to stop (the window's end, an operator's
            # cancel): a cancelled move with that reason, not a failed one
            cancel.settle_stopped(client, store, move_id)
            raise
        if result.get("skipped"):
            log.info("copy skipped: %s", result["reason"])
            set_state("skipped", result["reason"])
        elif artifact is not None:
            update_progress_artifact(artifact_id=artifact, progress=100.0)
        return result
