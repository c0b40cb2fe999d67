"""Past inventory snapshots and moves for the lab, so the capacity notebook has data on any machine.

``generate_history`` writes ``days`` daily snapshots (volumes growing at different rates, one of
them already over 85 % and others crossing soon) and the nightly storage moves of those weeks
(several volume pairs, with and without ODX, a few failures), each with its steps, the precheck's
estimate and progress samples.

The history ends where the estate is now: given a lab estate, its hosts, volumes, VM names, ids
and disk sizes are the real ones and every VM's newest location is where it lives, so a
rebalancing plan computed from this history names VMs and paths the lab has. Past moves are
replayed backwards from there: each move brought its VM to the location it had next, so fill
curves show the step a move makes. Without an estate the hosts, volumes and VMs are synthesised
the way ``hvmove lab up`` would lay them out.

The parts: ``estate`` (where the history ends), ``fill`` (volume fill curves), ``moves`` (which
VM moved when, and each move's rows), ``copies`` (each copy's rates, steps and samples),
``snapshots`` (the daily inventories), ``write`` (into the store, and out again).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hvmove.lab.estate import Estate
from hvmove.lab.history.estate import HistoryEstate, ending_estate
from hvmove.lab.history.fill import assign_roles, used_curve
from hvmove.lab.history.model import (
    BATCH_PREFIX,
    SOURCE,
    THRESHOLD_PCT,
    HistoryError,
    folder,
)
from hvmove.lab.history.moves import MoveRow, history_moves, plan_moves, snapshot_time
from hvmove.lab.history.write import clear_history, make_room, write_moves, write_snapshots
from hvmove.store import Store

__all__ = [
    "BATCH_PREFIX",
    "SOURCE",
    "THRESHOLD_PCT",
    "HistoryError",
    "clear_history",
    "folder",
    "generate_history",
]


def generate_history(
    store_url: str,
    days: int = 60,
    seed: int = 7,
    hosts: list[str] | None = None,
    lab_estate: Estate | None = None,
    *,
    end: datetime | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Fill the store at ``store_url`` with ``days`` daily snapshots ending at ``end`` (default:
    today 06:00 UTC) and the moves of those nights. Refuses a store that already holds generated
    history unless ``replace`` (which deletes that history first, and only that). Returns a
    summary: counts, hosts, the time span, and the volumes over the threshold at the end."""
    if days < 2:
        raise HistoryError("days must be at least 2: a trend needs two snapshots")
    rng = random.Random(seed)
    store = Store(store_url)
    try:
        make_room(store, replace)
        estate = ending_estate(hosts, lab_estate, rng)
        vols, vms = estate.vols, estate.vms
        end_at = end or datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
        if end_at.tzinfo is None:
            end_at = end_at.replace(tzinfo=UTC)
        if vms:
            plan_moves(vms, vols, days, rng)
        assign_roles(vols, vms, estate.hosts, rng, days - 1)
        used = {vol.key: used_curve(vol, vms, vols, days, rng) for vol in vols}
        write_snapshots(store, estate.hosts, vols, vms, used, days, end_at)
        rows = history_moves(vms, vols, days, end_at, rng, estate.odx_speedup)
        write_moves(store, rows)
        return _summary(store_url, estate, rows, used, days, end_at)
    finally:
        store.engine.dispose()


def _summary(
    store_url: str,
    estate: HistoryEstate,
    rows: list[MoveRow],
    used: dict[str, list[int]],
    days: int,
    end_at: datetime,
) -> dict[str, Any]:
    vols = estate.vols
    return {
        "store_url": store_url,
        "snapshots": days,
        "moves": len(rows),
        "failed_moves": sum(1 for r in rows if r.record.status == "failed"),
        "odx_moves": sum(1 for r in rows if r.record.odx),
        "hosts": estate.hosts,
        "volumes": len(vols),
        "vms": len(estate.vms),
        "from": snapshot_time(end_at, days, 0).isoformat(),
        "to": end_at.isoformat(),
        "over_threshold": [
            v.label_short for v in vols if used[v.key][-1] >= THRESHOLD_PCT / 100 * v.capacity
        ],
        "roles": {v.label_short: v.role for v in vols},
    }
