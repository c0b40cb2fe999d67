"""What every step task shares: retry only transient errors, record the step, emit its event."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from hvmove.hyperv.errors import TransientError
from hvmove.moves import HostSilent
from hvmove.names import resource_id
from hvmove.store import Store

# Resume rests on the store and on looking at the host, not on Prefect's result cache (its
# default policy is per flow run and the live client cannot be hashed): no cache, no results.
STEP_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 3,
    "retry_delay_seconds": [2, 10, 30],
}


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a step only when the host was unreachable, busy, or the reply was lost."""
    try:
        state.result()
    except HostSilent:
        # it already waited its whole silence bound: retrying would multiply the bound by the
        # retries and hide which host was silent for how long; a rerun attaches to the job
        return False
    except TransientError:
        return True
    except Exception:
        return False
    return False


def resource(host: str, vm: str, vm_id: str = "") -> dict[str, str]:
    return {
        "prefect.resource.id": resource_id(host, vm, vm_id),  # safe for any VM name
        "prefect.resource.name": vm,
        "hvmove.host": host,
        "hvmove.vm": vm,
    }


def emit(event: str, host: str, vm: str, vm_id: str = "", **payload: Any) -> None:
    emit_event(event=event, resource=resource(host, vm, vm_id), payload=payload)


@contextmanager
def recorded(store: Store, move_id: str, step: str) -> Iterator[Callable[[str], None]]:
    """Write the step's start and end to the move record; a failure is recorded, then raised."""
    store.step_started(move_id, step)
    outcome = {"state": "completed", "detail": ""}

    def set_state(state: str, detail: str = "") -> None:
        outcome.update(state=state, detail=detail)

    try:
        yield set_state
    except BaseException as exc:
        store.step_ended(move_id, step, "failed", str(exc)[:2000])
        raise
    store.step_ended(move_id, step, outcome["state"], outcome["detail"])


def label_run(name: str | None = None, tags: list[str] | None = None) -> None:
    """Add TAGS to the current flow run, and rename it to NAME: for what is known only once
    the run has started (its host, its batch, how many moves a night holds). Applied to the
    run itself, so it holds however the run was created (subflow, deployment, UI)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        have = client.read_flow_run(ctx.flow_run.id).tags or []
        client.update_flow_run(
            ctx.flow_run.id, name=name, tags=list(dict.fromkeys([*have, *(tags or [])]))
        )
