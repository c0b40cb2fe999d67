"""Loaders: the store's tables as pandas DataFrames, one row per snapshot, move or sample.

Each function takes a ``Store`` or a store URL; an empty store gives the columns and dtypes the
analysis expects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
from sqlalchemy import Select, select
from sqlalchemy.engine import Connection

from hvmove.store import (
    DiskSnapshot,
    MoveRecord,
    Snapshot,
    Store,
    ThroughputSample,
    VMSnapshot,
    VolumeSnapshot,
)

GiB = 1024**3
MB = 1_000_000  # throughput is in MB/s, as the hosts and the precheck report it
StoreLike = Store | str


@contextmanager
def _connect(store: StoreLike) -> Iterator[Connection]:
    if isinstance(store, Store):
        with store.engine.connect() as conn:
            yield conn
        return
    opened = Store(store)
    try:
        with opened.engine.connect() as conn:
            yield conn
    finally:
        opened.engine.dispose()  # a URL opened here must not leave a pool (or a file lock) behind


def _utc(series: pd.Series) -> pd.Series:
    # SQLite hands back naive datetimes (the store writes UTC), PostgreSQL aware ones: one dtype
    return pd.to_datetime(series, utc=True)


def _frame(
    store: StoreLike, stmt: Select[Any], dtypes: dict[str, str], times: Sequence[str] = ()
) -> pd.DataFrame:
    with _connect(store) as conn:
        result = conn.execute(stmt)
        df = pd.DataFrame(result.all(), columns=list(result.keys()))
    for col in times:
        df[col] = _utc(df[col])
    # an empty store must still give the columns and dtypes the analysis expects
    return df.astype({k: v for k, v in dtypes.items() if k in df.columns})


def volume_fill(store: StoreLike) -> pd.DataFrame:
    """One row per volume per snapshot: taken_at, snapshot_id, host, volume, kind, capacity, free,
    cluster (of the reporting host, or empty), used, used_pct (bytes; percent of capacity)."""
    stmt = (
        select(
            Snapshot.taken_at,
            VolumeSnapshot.snapshot_id,
            VolumeSnapshot.host,
            VolumeSnapshot.volume,
            VolumeSnapshot.kind,
            VolumeSnapshot.capacity,
            VolumeSnapshot.free,
            VolumeSnapshot.cluster,
        )
        .join(Snapshot, Snapshot.id == VolumeSnapshot.snapshot_id)
        .order_by(Snapshot.taken_at, VolumeSnapshot.host, VolumeSnapshot.volume)
    )
    df = _frame(
        store,
        stmt,
        {"snapshot_id": "int64", "capacity": "int64", "free": "int64"},
        times=["taken_at"],
    )
    df["used"] = (df["capacity"] - df["free"]).astype("int64")
    df["used_pct"] = 100.0 * df["used"] / df["capacity"].where(df["capacity"] > 0)
    return df


def vm_growth(store: StoreLike) -> pd.DataFrame:
    """One row per VM per snapshot: taken_at, snapshot_id, host, vm_id, vm_name, state, volume
    (the one holding its configuration), file_bytes (what a move copies), virtual_bytes."""
    stmt = (
        select(
            Snapshot.taken_at,
            VMSnapshot.snapshot_id,
            VMSnapshot.host,
            VMSnapshot.vm_id,
            VMSnapshot.vm_name,
            VMSnapshot.state,
            VMSnapshot.volume,
            VMSnapshot.file_bytes,
            VMSnapshot.virtual_bytes,
        )
        .join(Snapshot, Snapshot.id == VMSnapshot.snapshot_id)
        .order_by(Snapshot.taken_at, VMSnapshot.host, VMSnapshot.vm_name)
    )
    return _frame(
        store,
        stmt,
        {"snapshot_id": "int64", "file_bytes": "int64", "virtual_bytes": "int64"},
        times=["taken_at"],
    )


def disks(store: StoreLike) -> pd.DataFrame:
    """One row per disk file per snapshot: taken_at, snapshot_id, host, vm_id, path, volume, type,
    file_size, size."""
    stmt = (
        select(
            Snapshot.taken_at,
            DiskSnapshot.snapshot_id,
            DiskSnapshot.host,
            DiskSnapshot.vm_id,
            DiskSnapshot.path,
            DiskSnapshot.volume,
            DiskSnapshot.type,
            DiskSnapshot.file_size,
            DiskSnapshot.size,
        )
        .join(Snapshot, Snapshot.id == DiskSnapshot.snapshot_id)
        .order_by(Snapshot.taken_at, DiskSnapshot.host, DiskSnapshot.path)
    )
    return _frame(
        store,
        stmt,
        {"snapshot_id": "int64", "file_size": "int64", "size": "int64"},
        times=["taken_at"],
    )


def moves(store: StoreLike) -> pd.DataFrame:
    """One row per move: id, batch, host, vm, vm_id, mode, destination, status, reason, created_at,
    started_at, finished_at, source_volume, destination_volume, bytes, copy_seconds,
    estimated_seconds, measured_mbps, odx, verified, throughput (bytes / copy_seconds, in bytes/s;
    completed moves only) and throughput_mbps (the same in MB/s)."""
    stmt = select(
        MoveRecord.id,
        MoveRecord.batch,
        MoveRecord.host,
        MoveRecord.vm_name.label("vm"),
        MoveRecord.vm_id,
        MoveRecord.mode,
        MoveRecord.destination,
        MoveRecord.status,
        MoveRecord.reason,
        MoveRecord.created_at,
        MoveRecord.started_at,
        MoveRecord.finished_at,
        MoveRecord.source_volume,
        MoveRecord.destination_volume,
        MoveRecord.bytes_total.label("bytes"),
        MoveRecord.copy_seconds,
        MoveRecord.estimated_seconds,
        MoveRecord.measured_mbps,
        MoveRecord.odx,
        MoveRecord.verified,
    ).order_by(MoveRecord.created_at)
    df = _frame(
        store,
        stmt,
        {
            "bytes": "int64",
            "copy_seconds": "float64",
            "estimated_seconds": "float64",
            "measured_mbps": "float64",
            "odx": "boolean",  # nullable: a move that failed before the ODX check has no answer
            "verified": "bool",
        },
        times=["created_at", "started_at", "finished_at"],
    )
    # a failed copy's seconds cover only part of its bytes: no throughput rather than a wrong one
    seconds = df["copy_seconds"].where((df["copy_seconds"] > 0) & (df["status"] == "completed"))
    df["throughput"] = df["bytes"] / seconds
    df["throughput_mbps"] = df["throughput"] / MB
    return df


def throughput_samples(store: StoreLike) -> pd.DataFrame:
    """Progress samples taken during copies: move_id, host, vm, odx, at, percent, bytes_done, mbps,
    elapsed_s (since the move's first sample)."""
    stmt = (
        select(
            ThroughputSample.move_id,
            MoveRecord.host,
            MoveRecord.vm_name.label("vm"),
            MoveRecord.odx,
            ThroughputSample.at,
            ThroughputSample.percent,
            ThroughputSample.bytes_done,
            ThroughputSample.mbps,
        )
        .join(MoveRecord, MoveRecord.id == ThroughputSample.move_id)
        .order_by(ThroughputSample.move_id, ThroughputSample.at)
    )
    df = _frame(
        store,
        stmt,
        {"odx": "boolean", "percent": "int64", "bytes_done": "int64", "mbps": "float64"},
        times=["at"],
    )
    first = df.groupby("move_id")["at"].transform("min")
    df["elapsed_s"] = (df["at"] - first).dt.total_seconds()
    return df


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each host's newest snapshot. Per host, not overall: a host that did not answer
    the last inventory keeps its previous state instead of vanishing from the analysis."""
    if df.empty:
        return df.copy()
    newest = df.groupby("host")["snapshot_id"].transform("max")
    return df[df["snapshot_id"] == newest].reset_index(drop=True)
