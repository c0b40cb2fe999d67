"""Inventory snapshot as a Prefect flow: every host's volumes, VMs and disks into the store, for
capacity analysis (run on its own schedule next to the nightly batch)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from hvmove import runinfo
from hvmove.config import load
from hvmove.inventory import HostInventory
from hvmove.snapshots import record_snapshot
from hvmove.store import Store
from tasks.inventory import inventory_host_task


def run_name() -> str:
    """'inventory 2026-12-01 06:30 CET': the date in the config's time zone."""
    now = datetime.now(UTC)
    # a bad config is the run's own error to report; its name then stays in UTC
    with contextlib.suppress(Exception):
        now = now.astimezone(ZoneInfo(load(flow_run.parameters.get("config")).defaults.timezone))
    return runinfo.inventory_run_name(now)


@flow(name="inventory-snapshot", flow_run_name=run_name)
def inventory_snapshot(config: str = "hvmove.yaml") -> dict[str, Any]:
    log = get_run_logger()
    cfg = load(config)
    futures = {h.name: inventory_host_task.submit(str(cfg.path), h.name) for h in cfg.hosts}
    hosts: list[HostInventory] = []
    for name, future in futures.items():
        try:
            hosts.append(future.result())
        except Exception as exc:
            log.error("inventory of %s failed: %s", name, exc)
            hosts.append(HostInventory(name=name, error=str(exc)))
    store = Store(cfg.store_url())
    snapshot_id = record_snapshot(store, hosts, source="inventory")
    rows = [
        {
            "host": h.name,
            "volumes": len(h.volumes),
            "vms": len(h.vms),
            "used GiB": round(sum(v.capacity - v.free for v in h.volumes) / 1024**3, 1),
            "error": h.error or "",
        }
        for h in hosts
    ]
    create_table_artifact(
        key="inventory-snapshot",
        table=rows,
        description=f"Inventory snapshot {snapshot_id}",
        _sync=True,
    )
    log.info(
        "snapshot %s: %d hosts, %d VMs", snapshot_id, len(hosts), sum(len(h.vms) for h in hosts)
    )
    return {
        "snapshot_id": snapshot_id,
        "hosts": len(hosts),
        "failed": [h.name for h in hosts if h.error],
    }
