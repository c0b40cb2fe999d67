"""Cancel = stop the copy. Prefect runs these on_cancellation hooks after it stopped a flow run's
process (for a worker's run: in a fresh process in the flow's workspace), so they rebuild what
they need from the run's parameters and the store, and ask each host to stop its job."""

from __future__ import annotations

from typing import Any

from prefect.logging.loggers import flow_run_logger

from hvmove import cancel
from hvmove.batch import batch_id_for
from hvmove.config import load
from hvmove.hyperv.client import open_client
from hvmove.store import MoveRecord, Store


def _stop(flow: Any, flow_run: Any, state: Any, pick: Any) -> None:
    log = flow_run_logger(flow_run, flow)
    cfg = load(flow_run.parameters.get("config") or "hvmove.yaml")
    store = Store(cfg.store_url())
    reason = f"cancelled in Prefect: {_why(flow_run, state)}"
    for record in [r for r in store.moves() if r.status in ("pending", "running") and pick(r)]:
        try:
            with open_client(cfg, record.host) as client:
                done = cancel.stop_move(client, store, record.id, reason)
        except Exception as exc:  # one host's failure must not keep the others copying
            log.error("could not stop the move of %s on %s: %s", record.vm_name, record.host, exc)
            continue
        log.warning("%s on %s: %s (%s)", record.vm_name, record.host, done.outcome, done.detail)


def _why(flow_run: Any, state: Any) -> str:
    """The reason the operator gave: the Cancelling state's message (the final Cancelled state
    only says that the run was cancelled)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    try:
        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(flow_run.id)
    except Exception:  # the reason is a courtesy: never let it keep a job copying
        states = []
    asked = [s for s in states if s.type == StateType.CANCELLING and s.message]
    return asked[-1].message if asked else (state.message or "by a user")


def stop_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """migrate-vm: stop this run's move."""
    _stop(flow, flow_run, state, lambda r: r.flow_run_id == str(flow_run.id))


def stop_night_on_cancel(flow: Any, flow_run: Any, state: Any) -> None:
    """nightly-migrations: stop every move of this night's batch still copying."""
    batch = flow_run.parameters.get("batch_id") or batch_id_for(flow_run.expected_start_time)

    def ours(r: MoveRecord) -> bool:
        return r.batch == batch

    _stop(flow, flow_run, state, ours)
