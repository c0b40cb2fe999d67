"""One VM storage move as a Prefect flow: prechecks -> copy/mirror -> cutover -> verify -> cleanup.

Parameters name hosts and config files, never credentials: the host entry in hvmove.yaml says
where the password comes from (a Prefect Secret block or an environment variable). Running the
flow again for the same move resumes it: the store says which step was reached and each step
looks at the host before it acts.
"""

from __future__ import annotations

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
from hvmove.hyperv.client import open_client
from hvmove.layout import norm
from hvmove.models import MoveMode, MoveRequest, VhdMapping
from hvmove.plans import Plan, PlanError, request_problem, resolve
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
) -> Any:
    """Move one VM's storage. The parameters are typed (mode is a choice, numbers have ranges):
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
        return run_move(cfg, request, batch=batch, reserved=reserved, poll_seconds=poll_seconds)


def run_move(
    cfg: Config,
    request: MoveRequest,
    *,
    batch: str | None = None,
    reserved: dict[str, int] | None = None,
    poll_seconds: float = 2.0,
) -> Any:
    log = get_run_logger()
    store = Store(cfg.store_url())
    keep = request.keep_source_until_verified
    keep = cfg.defaults.keep_source_until_verified if keep is None else keep
    with open_client(cfg, request.host) as client:
        # the same checks, and the same one-line error, as a plan entry given to the CLI
        known = {(r.vm_id.lower(), norm(r.destination)) for r in store.moves()}
        (move,) = resolve(
            Plan(moves=[request]),
            cfg,
            {client.name: client.inventory().vms},
            "migrate-vm parameters",
            known,
        )
        request = move.request
        vm_id = move.vm.id
        record = store.open_move(
            host=client.name,
            vm_id=vm_id,
            vm_name=request.vm,
            request=request.model_dump(mode="json"),
            batch=batch,
        )
        move_id = record.id
        store.update(move_id, flow_run_id=str(flow_run.id) if flow_run.id else None)
        label_run(tags=runinfo.move_tags(client.name, request.vm, batch))
        resumed = record.last_step is not None or record.job_id is not None
        log.info(
            "%s move %s of %s on %s (record %s)",
            "resuming" if resumed else "starting",
            request.mode,
            request.vm,
            client.name,
            move_id,
        )
        emit(
            "hvmove.move.started",
            client.name,
            request.vm,
            vm_id,
            move_id=move_id,
            bytes=record.bytes_total,
            resumed=resumed,
            destination=request.destination_summary(),
        )
        step = "prechecks"
        try:
            report = prechecks_task(
                client, store, move_id, request, options_for(cfg, request), reserved
            )
            _step_done(store, move_id, client.name, request.vm, vm_id, "prechecks")
            step = "copy"
            # quote(): the request and host list are inputs, not results of prechecks (Prefect
            # would link them to it and draw edges that are not the steps' order)
            copied = copy_task(
                client,
                store,
                move_id,
                quote(request),
                retain_source=keep,
                poll_s=poll_seconds,
                silence_s=cfg.defaults.host_silence_minutes * 60,
                wait_for=[report],  # the run graph draws the five steps as a chain
            )
            _step_done(
                store,
                move_id,
                client.name,
                request.vm,
                vm_id,
                "copy",
                bytes=copied.get("bytes"),
                seconds=copied.get("seconds"),
            )
            step = "cutover"
            switched = cutover_task(client, store, move_id, quote(request), wait_for=[copied])
            _step_done(store, move_id, client.name, request.vm, vm_id, "cutover")
            step = "verify"
            verified = verify_task(client, store, move_id, request.vm, wait_for=[switched])
            _step_done(store, move_id, client.name, request.vm, vm_id, "verify")
            if cfg.cleanup == "approve":  # the source stays until the cleanup-approval flow
                return _hold_for_approval(store, move_id, client.name, request.vm, vm_id)
            step = "cleanup"
            with shared_storage.asker(cfg) as ask:
                cleanup_task(
                    client, store, move_id, request.vm, quote(cfg.hosts), ask, wait_for=[verified]
                )
            _step_done(store, move_id, client.name, request.vm, vm_id, "cleanup")
        except pipeline.Blocked as exc:
            store.finish(move_id, "blocked", str(exc))
            _report(store, move_id)
            emit(
                "hvmove.move.failed",
                client.name,
                request.vm,
                vm_id,
                move_id=move_id,
                step="prechecks",
                blocked=True,
                reason=str(exc),
            )
            # its own state, not a crash-red Failed: nothing was changed, the checks say why
            return Cancelled(name="Blocked", message=f"blocked by prechecks: {exc}")
        except Exception as exc:
            now = store.get(move_id)
            if now.status == "cancelled":  # a cancel (the night's or this run's) stopped the job
                _report(store, move_id)
                return Cancelled(message=f"{request.vm}: {now.reason}")
            store.finish(move_id, "failed", f"{step}: {exc}")
            _report(store, move_id)
            emit(
                "hvmove.move.failed",
                client.name,
                request.vm,
                vm_id,
                move_id=move_id,
                step=step,
                reason=str(exc),
            )
            raise
        store.finish(move_id, "completed")
        final = store.get(move_id)
        _report(store, move_id)
        emit(
            "hvmove.move.completed",
            client.name,
            request.vm,
            vm_id,
            move_id=move_id,
            bytes=final.bytes_total,
            seconds=final.copy_seconds,
            verified=final.verified,
            source_removed=final.source_removed,
            already_done=report.already_done,
        )
        return Completed(
            message=f"{request.vm} moved and verified",
            data={"move_id": move_id, "status": "completed"},
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
