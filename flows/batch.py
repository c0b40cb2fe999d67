"""Run a validated plan's moves one after another through the migrate-vm flow (the nightly
batch, with its planner and concurrency, is flows/nightly.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hvmove.config import Config
from hvmove.plans import ResolvedMove
from hvmove.store import Store, record_as_dict


def run_sequentially(
    cfg: Config,
    moves: list[ResolvedMove],
    *,
    batch: str | None = None,
    poll_seconds: float = 2.0,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    from flows.migrate_vm import migrate_vm  # Prefect loads only when moves really run

    store = Store(cfg.store_url())
    results: list[dict[str, Any]] = []
    for move in moves:
        req = move.request
        state = migrate_vm(
            host=req.host,
            vm=move.vm.name,
            mode=req.mode,
            destination=req.destination,
            virtual_machine_path=req.virtual_machine_path,
            snapshot_file_path=req.snapshot_file_path,
            smart_paging_file_path=req.smart_paging_file_path,
            vhds=[v.model_dump() for v in req.vhds] or None,
            headroom_percent=req.headroom_percent,
            probe_mib=req.probe_mib,
            keep_source_until_verified=req.keep_source_until_verified,
            config=str(cfg.path),
            batch=batch,
            poll_seconds=poll_seconds,
            return_state=True,
        )
        record = store.latest(req.host, move.vm.id)
        row = (
            record_as_dict(record, store.step_states(record.id))
            if record
            else {"vm": move.vm.name, "host": req.host, "status": "failed", "steps": {}}
        )
        row["prefect_state"] = state.type.value if state is not None else None
        row["message"] = state.message if state is not None else ""
        results.append(row)
        if on_done is not None:
            on_done(row)
    return results
