"""Inventory of one host as a Prefect task (hosts are collected concurrently by the flow)."""

from __future__ import annotations

from prefect import task

from hvmove.config import load
from hvmove.hyperv.client import open_client
from hvmove.inventory import HostInventory, collect_host
from tasks._common import STEP_OPTIONS, only_transient


@task(
    name="inventory-host",
    task_run_name="inventory-{host}",
    retry_condition_fn=only_transient,
    **STEP_OPTIONS,
)
def inventory_host_task(config: str, host: str) -> HostInventory:
    cfg = load(config)
    with open_client(cfg, host) as client:
        return collect_host(client)
