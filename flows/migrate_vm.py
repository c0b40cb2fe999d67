"""One VM storage move as a Prefect flow: prechecks -> copy/mirror -> cutover -> verify -> cleanup.

Parameters name hosts and config files, never credentials: the host entry in hvmove.yaml says
where the password comes from (a Prefect Secret block or an environment variable). Running the
flow again for the same move resumes it: the store says which step was reached and each step
looks at the host before it acts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import SyncClientContext
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed
from prefect.utilities.annotations import quote
from pydantic import Field

from hvmove import approvals, pipeline, reports, runinfo, shared_storage
from hvmove.batch import options_for
from hvmove.config import Config, load
from hvmove.hyperv.client import HostClient
from hvmove.models import MoveMode, MoveRequest, VhdMapping
from hvmove.plans import PlanError, request_problem
from hvmove.session import MoveSession, move_session
from hvmove.store import Store
from tasks._common import emit, label_run
from tasks.cancel import stop_on_cancel
from tasks.cleanup import cleanup_task
from tasks.copy import copy_task
from tasks.cutover import cutover_task
from tasks.prechecks import artifact_key, prechecks_task
from tasks.verify import verify_task


def run_name() -> str:
    return runinfo.move_run_name(flow_run.parameters)


@flow(
    name="migrate-vm",
    flow_run_name=run_name,
    retries=0,
    on_cancellation=[stop_on_cancel],
)
def migrate_vm(
    host: str,
    vm: str,
    mode: MoveMode = "all",
    destination: str | None = None,
    virtual_machine_path: str | None = None,
    snapshot_file_path: str | None = None,
    smart_paging_file_path: str | None = None,
    vhds: list[VhdMapping] | None = None,
    headroom_percent: Annotated[float, Field(ge=0, le=90)] | None = None,
    probe_mib: Annotated[int, Field(ge=1, le=4096)] | None = None,
    keep_source_until_verified: bool | None = None,
    config: str = "hvmove.yaml",
    batch: str | None = None,
    reserved: dict[str, int] | None = None,
    poll_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0,
    not_before: datetime | None = None,
    measured_mbps: Annotated[float, Field(gt=0)] | None = None,
) -> Any:
    """Move one VM's storage. NOT_BEFORE: the copy waits for it once the prechecks passed (a
    night starts its first moves before its window, so they are ready to copy at its start).
    MEASURED_MBPS: the destination's bandwidth as a night's prechecks measured it; the move's
    prechecks use it instead of probing again beside the night's other moves.
    The parameters are typed (mode is a choice, numbers have ranges):
    the UI's Run form offers only valid values, and the server refuses a bad one at run
    creation. The move is then checked like a plan entry, the same one-line error as the CLI,
    before anything starts.

    A sync flow on purpose: Secret blocks, artifacts and Prefect's cancel signal behave as
    documented only there (an async body that blocks for hours gets none of them)."""
    cfg = load(config)
    request = MoveRequest(
        host=host,
        vm=vm,
        mode=mode,
        destination=destination,
        virtual_machine_path=virtual_machine_path,
        snapshot_file_path=snapshot_file_path,
        smart_paging_file_path=smart_paging_file_path,
        vhds=vhds or [],
        headroom_percent=headroom_percent,
        probe_mib=probe_mib,
        keep_source_until_verified=keep_source_until_verified,
    )
    problem = request_problem(request)  # before any host is asked: the CLI's very words
    if problem:
        raise PlanError(f"migrate-vm parameters ({request.label()}): {problem}")
    # One API client for the whole move: without it every task run and every artifact call
    # builds its own, and each loads the CA bundle into a fresh TLS context (about 20 ms apiece,
    # 0.2 s per move measured with benchmarks/overhead.py), even for an http:// API.
    with SyncClientContext.get_or_create():
        return run_move(
            cfg,
            request,
            batch=batch,
            reserved=reserved,
            poll_seconds=poll_seconds,
            not_before=not_before,
            measured_mbps=measured_mbps,
        )


def run_move(
    cfg: Config,
    request: MoveRequest,
    *,
    batch: str | None = None,
    reserved: dict[str, int] | None = None,
    poll_seconds: float = 2.0,
    not_before: datetime | None = None,
    measured_mbps: float | None = None,
) -> Any:
    """The five steps of one move, in the host session the library opens, ending in a state
    that says what happened: Completed, Cancelled(Blocked), Cancelled, or the step's error."""
    store = Store(cfg.store_url())
    run_id = str(flow_run.id) if flow_run.id else None
    with move_session(cfg, store, request, batch=batch, flow_run_id=run_id) as session:
        move = _Move(store, session)
        label_run(tags=runinfo.move_tags(move.host, move.vm, batch))
        _announce(move)
        try:
            held = _steps(cfg, move, reserved, poll_seconds, not_before, measured_mbps)
        except pipeline.Blocked as exc:
            return _blocked(move, exc)
        except Exception as exc:
            cancelled = _failed(move, exc)
            if cancelled is None:
                raise
            return cancelled
        return held if held is not None else _completed(move)


@dataclass
class _Move:
    """The move while its steps run: where it is, and the step it reached (for the failure)."""

    store: Store
    session: MoveSession
    step: str = "prechecks"
    already_done: bool = False

    @property
    def client(self) -> HostClient:
        return self.session.client

    @property
    def host(self) -> str:
        return self.session.host

    @property
    def vm(self) -> str:
        return self.session.request.vm

    @property
    def vm_id(self) -> str:
        return self.session.vm_id

    @property
    def move_id(self) -> str:
        return self.session.move_id

    def done(self, step: str, **payload: Any) -> None:
        _step_done(self.store, self.move_id, self.host, self.vm, self.vm_id, step, **payload)


def _announce(move: _Move) -> None:
    session = move.session
    get_run_logger().info(
        "%s move %s of %s on %s (record %s)",
        "resuming" if session.resumed else "starting",
        session.request.mode,
        move.vm,
        move.host,
        move.move_id,
    )
    emit(
        "hvmove.move.started",
        move.host,
        move.vm,
        move.vm_id,
        move_id=move.move_id,
        bytes=session.record.bytes_total,
        resumed=session.resumed,
        destination=session.request.destination_summary(),
    )


def _steps(
    cfg: Config,
    move: _Move,
    reserved: dict[str, int] | None,
    poll_seconds: float,
    not_before: datetime | None = None,
    measured_mbps: float | None = None,
) -> Any | None:
    """prechecks -> copy -> cutover -> verify -> cleanup; a state instead of None when the move
    holds for the cleanup approval."""
    client, store, move_id, request = move.client, move.store, move.move_id, move.session.request
    keep = request.keep_source_until_verified
    keep = cfg.defaults.keep_source_until_verified if keep is None else keep
    options = replace(options_for(cfg, request), measured_mbps=measured_mbps)
    report = prechecks_task(client, store, move_id, request, options, reserved)
    move.already_done = report.already_done
    move.done("prechecks")
    move.step = "copy"
    # quote(): the request and host list are inputs, not results of prechecks (Prefect would link
    # them to it and draw edges that are not the steps' order)
    copied = copy_task(
        client,
        store,
        move_id,
        quote(request),
        retain_source=keep,
        poll_s=poll_seconds,
        silence_s=cfg.defaults.host_silence_minutes * 60,
        not_before=_aware(not_before),
        wait_for=[report],  # the run graph draws the five steps as a chain
    )
    move.done("copy", bytes=copied.get("bytes"), seconds=copied.get("seconds"))
    move.step = "cutover"
    switched = cutover_task(client, store, move_id, quote(request), wait_for=[copied])
    move.done("cutover")
    move.step = "verify"
    verified = verify_task(client, store, move_id, request.vm, wait_for=[switched])
    move.done("verify")
    if cfg.cleanup == "approve":  # the source stays until the cleanup-approval flow
        return _hold_for_approval(store, move_id, move.host, move.vm, move.vm_id)
    move.step = "cleanup"
    with shared_storage.asker(cfg) as ask:
        cleanup_task(client, store, move_id, request.vm, quote(cfg.hosts), ask, wait_for=[verified])
    move.done("cleanup")
    return None


def _aware(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _blocked(move: _Move, exc: pipeline.Blocked) -> Any:
    move.store.finish(move.move_id, "blocked", str(exc))
    _report(move.store, move.move_id)
    emit(
        "hvmove.move.failed",
        move.host,
        move.vm,
        move.vm_id,
        move_id=move.move_id,
        step="prechecks",
        blocked=True,
        reason=str(exc),
    )
    # its own state, not a crash-red Failed: nothing was changed, the checks say why
    return Cancelled(name="Blocked", message=f"blocked by prechecks: {exc}")


def _failed(move: _Move, exc: Exception) -> Any | None:
    """Records the failure of the step the move reached; None means the caller re-raises. A
    cancel (the night's or this run's) that stopped the job ends Cancelled instead."""
    now = move.store.get(move.move_id)
    if now.status == "cancelled":
        _report(move.store, move.move_id)
        return Cancelled(message=f"{move.vm}: {now.reason}")
    move.store.finish(move.move_id, "failed", f"{move.step}: {exc}")
    _report(move.store, move.move_id)
    emit(
        "hvmove.move.failed",
        move.host,
        move.vm,
        move.vm_id,
        move_id=move.move_id,
        step=move.step,
        reason=str(exc),
    )
    return None


def _completed(move: _Move) -> Any:
    move.store.finish(move.move_id, "completed")
    final = move.store.get(move.move_id)
    _report(move.store, move.move_id)
    emit(
        "hvmove.move.completed",
        move.host,
        move.vm,
        move.vm_id,
        move_id=move.move_id,
        bytes=final.bytes_total,
        seconds=final.copy_seconds,
        verified=final.verified,
        source_removed=final.source_removed,
        already_done=move.already_done,
    )
    return Completed(
        message=f"{move.vm} moved and verified",
        data={"move_id": move.move_id, "status": "completed"},
    )


def _hold_for_approval(store: Store, move_id: str, host: str, vm: str, vm_id: str) -> Any:
    approvals.hold(store, move_id)
    _report(store, move_id)
    emit("hvmove.move.awaiting-approval", host, vm, vm_id, move_id=move_id)
    return Completed(
        name="Awaiting approval",
        message=f"{vm}: {approvals.STATUS}, {approvals.REASON}",
        data={"move_id": move_id, "status": approvals.STATUS},
    )


def _step_done(
    store: Store, move_id: str, host: str, vm: str, vm_id: str, step: str, **payload: Any
) -> None:
    emit(
        "hvmove.move.step.completed",
        host,
        vm,
        vm_id,
        move_id=move_id,
        step=step,
        state=store.step_states(move_id).get(step),
        **payload,
    )


def _report(store: Store, move_id: str) -> None:
    r = store.get(move_id)
    create_markdown_artifact(
        key=artifact_key("move-report", r.host, r.vm_name),
        markdown=reports.move_markdown(r, store.step_states(move_id)),
        description=f"Move report of {r.vm_name} on {r.host}",
    )


if __name__ == "__main__":  # pragma: no cover - `python -m flows.migrate_vm` for a quick manual run
    import sys

    import yaml

    migrate_vm(**yaml.safe_load(sys.argv[1]))
