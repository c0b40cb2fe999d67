"""Writing the generated history to a store, and removing it again (only what the generator
wrote: its snapshots by source, its moves by batch prefix)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select

from hvmove.lab.history.model import BATCH_PREFIX, SOURCE, VM, HistoryError, Vol
from hvmove.lab.history.moves import MoveRow, snapshot_time
from hvmove.lab.history.snapshots import host_inventory
from hvmove.snapshots import record_snapshot
from hvmove.store import (
    DiskSnapshot,
    MoveRecord,
    Snapshot,
    StepRecord,
    Store,
    ThroughputSample,
    VMSnapshot,
    VolumeSnapshot,
)


def clear_history(store: Store) -> int:
    """Delete what an earlier ``generate_history`` wrote (and nothing else); returns the number of
    snapshots removed."""
    with store.session() as s:
        snaps = list(s.scalars(select(Snapshot.id).where(Snapshot.source == SOURCE)))
        for table in (VolumeSnapshot, VMSnapshot, DiskSnapshot):
            s.execute(delete(table).where(table.snapshot_id.in_(snaps)))
        s.execute(delete(Snapshot).where(Snapshot.id.in_(snaps)))
        moves = select(MoveRecord.id).where(MoveRecord.batch.like(BATCH_PREFIX + "%"))
        s.execute(delete(ThroughputSample).where(ThroughputSample.move_id.in_(moves)))
        s.execute(delete(StepRecord).where(StepRecord.move_id.in_(moves)))
        s.execute(delete(MoveRecord).where(MoveRecord.batch.like(BATCH_PREFIX + "%")))
    return len(snaps)


def make_room(store: Store, replace: bool) -> None:
    """Refuse a store that already holds generated history, unless ``replace``: then delete that
    history first (and only that)."""
    with store.session() as s:
        earlier = s.scalar(
            select(func.count()).select_from(Snapshot).where(Snapshot.source == SOURCE)
        )
    if earlier and not replace:
        raise HistoryError(
            f"the store already holds {earlier} generated snapshots; pass replace=True "
            "(--replace) to regenerate them"
        )
    if earlier:
        clear_history(store)


def write_snapshots(
    store: Store,
    hosts: list[str],
    vols: list[Vol],
    vms: list[VM],
    used: dict[str, list[int]],
    days: int,
    end_at: datetime,
) -> None:
    """One snapshot a day, through the production recorder."""
    last = days - 1
    for day in range(days):
        record_snapshot(
            store,
            [host_inventory(h, vols, vms, used, day, last) for h in hosts],
            source=SOURCE,
            taken_at=snapshot_time(end_at, days, day),
        )


def write_moves(store: Store, rows: list[MoveRow]) -> None:
    with store.session() as s:
        s.add_all([row.record for row in rows])
        s.flush()  # steps and samples reference the moves
        for row in rows:
            s.add_all(row.steps)
            s.add_all(row.samples)
