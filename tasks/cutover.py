"""Cutover as a Prefect task: confirms Hyper-V switched every component to the destination."""

from __future__ import annotations

from prefect import get_run_logger, task

from hvmove import pipeline
from hvmove.hyperv.client import HostClient
from hvmove.models import MoveRequest
from hvmove.store import Store
from tasks._common import STEP_OPTIONS, only_transient, recorded


@task(
    name="cutover",
    task_run_name="cutover-{request.vm}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def cutover_task(client: HostClient, store: Store, move_id: str, request: MoveRequest) -> dict:
    with recorded(store, move_id, "cutover"):
        result = pipeline.run_cutover(client, store, move_id, request)
        get_run_logger().info(
            "switched: %s is %s, configuration at %s",
            request.vm,
            result["state"],
            result["configuration_location"],
        )
        return result
