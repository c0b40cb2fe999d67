"""The morning approval of source cleanups, as a Prefect flow (the `cleanup-approval` deployment):
list the verified moves whose source copies wait for approval in a table artifact, suspend with a
form (one checkbox per move, plus "approve all verified"), and on resume run the cleanup step for
the approved moves only; the rest keep waiting. Suspending frees the worker while people decide;
Prefect reruns the flow from the top on resume and hands it the answer. Suspend needs a
deployment-backed run (server and Cloud alike)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from pydantic import ConfigDict, Field, create_model

from hvmove import approvals, shared_storage
from hvmove.config import Config, load
from hvmove.session import HostClients
from hvmove.store import MoveRecord, Store
from tasks._common import emit
from tasks.cleanup import cleanup_task


class ApprovalForm(RunInput):
    # an answer saved for an older list still loads: fields of moves no longer waiting are
    # ignored, and moves added since default to not approved
    model_config = ConfigDict(extra="ignore")


def approval_form(records: list[MoveRecord]) -> type[ApprovalForm]:
    """The form the UI shows on the suspended run: a checkbox per waiting move."""
    fields: dict[str, Any] = {
        approvals.APPROVE_ALL: (
            bool,
            Field(False, title="Approve all verified", description="every move listed below"),
        )
    }
    for r in records:
        fields[approvals.field_name(r.id)] = (
            bool,
            Field(
                False,
                title=approvals.label(r),
                description="deletes " + ("; ".join(approvals.sources(r)) or "no file"),
            ),
        )
    return create_model("CleanupApproval", __base__=ApprovalForm, **fields)


def run_name() -> str:
    return f"cleanup approval {datetime.now(UTC):%Y-%m-%d}"


@flow(name="cleanup-approval", flow_run_name=run_name, retries=0)
def cleanup_approval(config: str = "hvmove.yaml") -> Any:
    """List the verified moves whose sources wait for approval, ask, and clean up the approved."""
    log = get_run_logger()
    cfg = load(config)
    store = Store(cfg.store_url())
    waiting = approvals.awaiting(store)
    create_table_artifact(
        key="cleanup-approval",
        table=approvals.rows(waiting) or [{"vm": "(none)", "host": "", "destination": ""}],
        description=f"{len(waiting)} move(s) verified, awaiting cleanup approval",
    )
    if not waiting:
        return Completed(message="no move awaits cleanup approval")
    log.info("%d move(s) await cleanup approval: tick them in this run's form", len(waiting))
    # a fixed key: on the rerun after resume, suspend returns the answer instead of asking again
    answer = suspend_flow_run(wait_for_input=approval_form(waiting), key="cleanup-approval")
    assert answer is not None  # resuming without the form's input fails the run (Prefect)
    chosen = approvals.approved(approvals.awaiting(store), answer.model_dump())
    done, failed = _clean_up(cfg, store, chosen, log)
    left = len(approvals.awaiting(store))
    message = f"cleaned up {done} move(s), {left} still awaiting approval"
    if failed:
        message += f", {failed} failed (see the log)"
    log.info(message)
    return Completed(message=message, data={"cleaned": done, "waiting": left, "failed": failed})


def _clean_up(cfg: Config, store: Store, chosen: list[MoveRecord], log: Any) -> tuple[int, int]:
    done = failed = 0
    with HostClients(cfg) as clients, shared_storage.asker(cfg) as ask:
        for r in chosen:
            client = clients.get(r.host)
            try:
                cleanup_task(client, store, r.id, r.vm_name, cfg.hosts, ask)
            except Exception as exc:  # one refusal must not stop the others' cleanup
                failed += 1
                log.error("cleanup of %s on %s failed: %s", r.vm_name, r.host, exc)
                continue
            store.finish(r.id, "completed", "cleanup approved")
            final = store.get(r.id)
            emit(
                "hvmove.move.completed",
                r.host,
                r.vm_name,
                r.vm_id,
                move_id=r.id,
                bytes=final.bytes_total,
                verified=final.verified,
                source_removed=final.source_removed,
                approved_cleanup=True,
            )
            done += 1
    return done, failed
