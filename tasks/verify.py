"""Verification as a Prefect task: Test-VHD, Get-VHD facts before/after, heartbeat."""

from __future__ import annotations

from prefect import get_run_logger, task

from hvmove import pipeline
from hvmove.hyperv.client import HostClient
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, only_transient, recorded


@task(
    name="verify",
    task_run_name="verify-{vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def verify_task(client: HostClient, store: Store, move_id: str, vm: str = "") -> dict:
    with recorded(store, move_id, "verify"):
        evidence = pipeline.run_verify(client, store, move_id)
        get_run_logger().info(
            "verified %d disk(s): Test-VHD ok, identity and size unchanged, heartbeat %s",
            len(evidence["disks"]),
            evidence["heartbeat"],
        )
        return evidence
