"""Source cleanup as a Prefect task: only after verification; never a file a VM references."""

from __future__ import annotations

from prefect import get_run_logger, task

from hvmove import pipeline
from hvmove.config import HostConfig
from hvmove.hyperv.client import HostClient
from hvmove.shared_storage import Ask
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, only_transient, recorded


@task(
    name="cleanup",
    task_run_name="cleanup-{vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def cleanup_task(
    client: HostClient,
    store: Store,
    move_id: str,
    vm: str = "",
    hosts: list[HostConfig] | None = None,
    ask: Ask | None = None,
) -> dict:
    log = get_run_logger()
    with recorded(store, move_id, "cleanup") as set_state:
        evidence = pipeline.run_cleanup(client, store, move_id, hosts=hosts, ask=ask)
        log.info(
            "removed %d file(s) and %d folder(s) from the source; asked first whose VMs use "
            "them: %s",
            len(evidence["removed"]),
            len(evidence["folders_removed"]),
            ", ".join(evidence["asked"]),
        )
        if evidence["kept"]:
            # not a failure: the VM moved and was verified; these files belong to other VMs too
            detail = "; ".join(f"{k['path']}: {k['reason']}" for k in evidence["kept"])
            log.warning("kept %d source file(s) still in use: %s", len(evidence["kept"]), detail)
            set_state("completed", f"kept {len(evidence['kept'])} file(s) in use: {detail}")
        return evidence
