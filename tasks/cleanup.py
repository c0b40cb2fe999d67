"""Source cleanup as a Prefect task: only after verification; never a file a VM references."""

from __future__ import annotations

from prefect import get_run_logger, task

from hvmove import pipeline
from hvmove.hyperv.client import HostClient
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, only_transient, recorded


@task(
    name="cleanup",
    task_run_name="cleanup-{vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def cleanup_task(client: HostClient, store: Store, move_id: str, vm: str = "") -> dict:
    with recorded(store, move_id, "cleanup"):
        evidence = pipeline.run_cleanup(client, store, move_id)
        get_run_logger().info(
            "removed %d file(s) and %d folder(s) from the source",
            len(evidence["removed"]),
            len(evidence["folders_removed"]),
        )
        return evidence
