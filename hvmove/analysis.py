"""Capacity analysis over the store: loaders that return DataFrames, and the analysis the notebook
shows (fill forecast per volume, throughput per volume pair with and without ODX, ETA accuracy,
and a rebalancing proposal written out as a plan file).

Every function here takes and returns plain DataFrames so the notebook stays a thin page of calls
and the logic is unit-tested. Plot helpers import matplotlib lazily: the core library must import
without it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from sqlalchemy import Select, select
from sqlalchemy.engine import Connection

from hvmove.models import MoveRequest, Plan
from hvmove.snapshots import BLOCKER_TYPES, ISO, PASS_THROUGH, SHARED_VHDX
from hvmove.store import (
    DiskSnapshot,
    MoveRecord,
    Snapshot,
    Store,
    ThroughputSample,
    VMSnapshot,
    VolumeSnapshot,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GiB = 1024**3
MB = 1_000_000  # throughput is in MB/s, as the hosts and the precheck report it
StoreLike = Store | str
SHARED_KINDS = ("smb", "csv")  # volumes several hosts see: one volume, not one per host

# --------------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------------


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
    used, used_pct (bytes; percent of capacity)."""
    stmt = (
        select(
            Snapshot.taken_at,
            VolumeSnapshot.snapshot_id,
            VolumeSnapshot.host,
            VolumeSnapshot.volume,
            VolumeSnapshot.kind,
            VolumeSnapshot.capacity,
            VolumeSnapshot.free,
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


# --------------------------------------------------------------------------------------------------
# volumes: one identity per volume, even when several hosts report it
# --------------------------------------------------------------------------------------------------


def _root_key(root: str) -> str:
    return root.replace("/", "\\").rstrip("\\").lower() + "\\"


def _volume_key(host: str, volume: str, kind: str) -> tuple[str, str]:
    # a share is the same volume whichever host reports it; a local D:\ is one per host
    return ("*" if kind in SHARED_KINDS else host.lower(), _root_key(volume))


def collapse_shared(vf: pd.DataFrame) -> pd.DataFrame:
    """``volume_fill`` rows with each shared volume (SMB share, CSV) once per snapshot instead of
    once per reporting host; ``host`` lists those hosts, ``hosts`` holds them as a tuple."""
    if vf.empty:
        out = vf.copy()
        out["key"] = pd.Series(dtype=object)
        out["hosts"] = pd.Series(dtype=object)
        return out
    df = vf.copy()
    df["key"] = [
        _volume_key(h, v, k) for h, v, k in zip(df["host"], df["volume"], df["kind"], strict=True)
    ]
    rows = []
    for (key, snap), g in df.groupby(["key", "snapshot_id"], sort=False):
        hosts = tuple(sorted(set(g["host"])))
        first = g.iloc[0]
        used = int(g["used"].mean())  # hosts read the same share within seconds of each other
        capacity = int(g["capacity"].max())
        rows.append(
            {
                "taken_at": first["taken_at"],
                "snapshot_id": snap,
                "host": ", ".join(hosts),
                "volume": first["volume"],
                "kind": first["kind"],
                "capacity": capacity,
                "free": capacity - used,
                "used": used,
                "used_pct": 100.0 * used / capacity if capacity else math.nan,
                "key": key,
                "hosts": hosts,
            }
        )
    return pd.DataFrame(rows).sort_values(["taken_at", "host", "volume"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# forecast
# --------------------------------------------------------------------------------------------------


@dataclass
class Trend:
    slope: float  # bytes per day
    level: float  # trend value (bytes) at the last sample
    steps: int  # one-off changes (moves in or out, deletions) left out of the fit


def fit_trend(days: np.ndarray, used: np.ndarray, capacity: float) -> Trend:
    """Least-squares line through a volume's used bytes, with one-off steps taken out first.

    A storage move in or out of a volume changes its fill by a whole VM overnight; a line fitted
    through such a step would read a move as growth. Intervals whose change is far from the typical
    daily change (more than six robust deviations and at least half a percent of the volume) are
    replaced by the typical change before the fit; the line is then anchored on the last sample.
    """
    n = len(days)
    if n == 0:
        return Trend(math.nan, math.nan, 0)
    if n < 2 or days[-1] - days[0] <= 0:
        return Trend(math.nan, float(used[-1]), 0)
    d = np.diff(used.astype(float))
    dt = np.diff(days.astype(float))
    dt[dt <= 0] = 1e-9
    typical = float(np.median(d / dt))
    resid = d - typical * dt
    spread = 1.4826 * float(np.median(np.abs(resid)))
    jumps = np.abs(resid) > max(6.0 * spread, 0.005 * capacity)
    adjusted = np.concatenate([[0.0], np.cumsum(np.where(jumps, typical * dt, d))]) + used[0]
    slope, intercept = np.polyfit(days.astype(float), adjusted, 1)
    # the fit lives on the de-stepped series; shift it back onto the volume as it is now
    level = slope * days[-1] + intercept + (used[-1] - adjusted[-1])
    return Trend(float(slope), float(level), int(jumps.sum()))


def forecast_fill(
    volume_fill_df: pd.DataFrame,
    threshold_pct: float = 85.0,
    horizon_days: float = 90.0,
) -> pd.DataFrame:
    """Per volume: the fill trend and the date it crosses ``threshold_pct``.

    Columns: host, volume, kind, capacity_gib, used_gib, used_pct, growth_gib_per_day,
    growth_pct_per_day, days_to_threshold, crossing_date, fill_at_horizon_pct, status, as_of,
    trend_pct, steps. ``status`` is ``above`` (already at or over the threshold; crossing_date is
    when it last went over), ``crosses`` (within the horizon) or ``ok``; crossing_date and
    days_to_threshold are empty for ``ok``. Shared volumes appear once.
    """
    vf = collapse_shared(volume_fill_df)
    rows: list[dict[str, Any]] = []
    for _key, g in vf.groupby("key", sort=False):
        g = g.sort_values("taken_at")
        cap = float(g["capacity"].iloc[-1])
        t0 = g["taken_at"].iloc[0]
        days = ((g["taken_at"] - t0).dt.total_seconds() / 86400.0).to_numpy()
        used = g["used"].to_numpy(dtype=float)
        trend = fit_trend(days, used, cap)
        as_of = g["taken_at"].iloc[-1]
        limit = cap * threshold_pct / 100.0
        used_pct = float(g["used_pct"].iloc[-1])
        crossing: pd.Timestamp | None = None
        days_to: float | None = None
        if used_pct >= threshold_pct:
            status = "above"
            below = g[g["used_pct"] < threshold_pct]
            after = g[g["taken_at"] > below["taken_at"].max()] if not below.empty else g
            crossing, days_to = after["taken_at"].iloc[0].floor("D"), 0.0
        elif trend.level >= limit:
            status, crossing, days_to = "crosses", as_of.floor("D"), 0.0
        elif trend.slope > 0 and (limit - trend.level) / trend.slope <= horizon_days:
            days_to = (limit - trend.level) / trend.slope
            status = "crosses"
            crossing = (as_of + pd.Timedelta(days=days_to)).floor("D")
        else:
            status = "ok"
        slope = 0.0 if math.isnan(trend.slope) else trend.slope
        rows.append(
            {
                "host": g["host"].iloc[-1],
                "volume": g["volume"].iloc[-1],
                "kind": g["kind"].iloc[-1],
                "capacity_gib": cap / GiB,
                "used_gib": used[-1] / GiB,
                "used_pct": used_pct,
                "growth_gib_per_day": trend.slope / GiB,
                "growth_pct_per_day": 100.0 * trend.slope / cap if cap else math.nan,
                "days_to_threshold": days_to,
                "crossing_date": crossing,
                "fill_at_horizon_pct": 100.0 * (trend.level + slope * horizon_days) / cap
                if cap
                else math.nan,
                "status": status,
                "as_of": as_of,
                "trend_pct": 100.0 * trend.level / cap if cap else math.nan,
                "steps": trend.steps,
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "host",
            "volume",
            "kind",
            "capacity_gib",
            "used_gib",
            "used_pct",
            "growth_gib_per_day",
            "growth_pct_per_day",
            "days_to_threshold",
            "crossing_date",
            "fill_at_horizon_pct",
            "status",
            "as_of",
            "trend_pct",
            "steps",
        ],
    )
    out["crossing_date"] = pd.to_datetime(out["crossing_date"], utc=True)
    out["days_to_threshold"] = out["days_to_threshold"].astype("float64")
    order = out["status"].map({"above": 0, "crosses": 1, "ok": 2})
    out = out.assign(_o=order).sort_values(
        ["_o", "days_to_threshold", "used_pct"], ascending=[True, True, False]
    )
    return out.drop(columns="_o").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# throughput and ETA accuracy
# --------------------------------------------------------------------------------------------------


def _completed_copies(moves_df: pd.DataFrame) -> pd.DataFrame:
    ok = (
        (moves_df["status"] == "completed")
        & (moves_df["copy_seconds"] > 0)
        & (moves_df["bytes"] > 0)
    )
    return moves_df[ok.fillna(False)]


def _odx_label(odx: pd.Series) -> pd.Series:
    return odx.map({True: "ODX", False: "no ODX"}).fillna("unknown").astype(str)


def throughput_by_pair(moves_df: pd.DataFrame) -> pd.DataFrame:
    """Throughput of completed copies per host and volume pair, ODX and not kept apart.

    Columns: host, source_volume, destination_volume, pair, odx, moves, gib, median_mbps,
    mean_mbps, min_mbps, max_mbps; fastest pairs first within a host.
    """
    done = _completed_copies(moves_df).copy()
    cols = [
        "host",
        "source_volume",
        "destination_volume",
        "pair",
        "odx",
        "moves",
        "gib",
        "median_mbps",
        "mean_mbps",
        "min_mbps",
        "max_mbps",
    ]
    if done.empty:
        return pd.DataFrame(columns=cols)
    done["odx"] = _odx_label(done["odx"])
    out = (
        done.groupby(["host", "source_volume", "destination_volume", "odx"], dropna=False)
        .agg(
            moves=("id", "count"),
            gib=("bytes", lambda b: b.sum() / GiB),
            median_mbps=("throughput_mbps", "median"),
            mean_mbps=("throughput_mbps", "mean"),
            min_mbps=("throughput_mbps", "min"),
            max_mbps=("throughput_mbps", "max"),
        )
        .reset_index()
    )
    out["pair"] = out["host"] + " " + out["source_volume"] + " → " + out["destination_volume"]
    out = out.sort_values(["host", "median_mbps"], ascending=[True, False])
    return out[cols].reset_index(drop=True)


def odx_comparison(moves_df: pd.DataFrame) -> pd.DataFrame:
    """Completed copies with and without ODX: moves, gib, median/p25/p75 MB/s, and speedup (the
    median over the median of copies without ODX)."""
    done = _completed_copies(moves_df).copy()
    if done.empty:
        return pd.DataFrame(columns=["odx", "moves", "gib", "median_mbps", "p25_mbps", "p75_mbps"])
    done["odx"] = _odx_label(done["odx"])
    out = (
        done.groupby("odx")
        .agg(
            moves=("id", "count"),
            gib=("bytes", lambda b: b.sum() / GiB),
            median_mbps=("throughput_mbps", "median"),
            p25_mbps=("throughput_mbps", lambda s: s.quantile(0.25)),
            p75_mbps=("throughput_mbps", lambda s: s.quantile(0.75)),
        )
        .reset_index()
    )
    base = out.loc[out["odx"] == "no ODX", "median_mbps"]
    out["speedup"] = out["median_mbps"] / base.iloc[0] if not base.empty else math.nan
    return out.sort_values("median_mbps", ascending=False).reset_index(drop=True)


def eta_accuracy(moves_df: pd.DataFrame) -> pd.DataFrame:
    """Per completed move with an estimate: id, host, vm, odx, gib, estimated_seconds,
    copy_seconds, ratio (actual over estimated: above 1 means it took longer than announced) and
    error_pct."""
    done = _completed_copies(moves_df)
    done = done[(done["estimated_seconds"] > 0).fillna(False)].copy()
    done["odx"] = _odx_label(done["odx"])
    done["gib"] = done["bytes"] / GiB
    done["ratio"] = done["copy_seconds"] / done["estimated_seconds"]
    done["error_pct"] = 100.0 * (done["ratio"] - 1.0)
    cols = ["id", "host", "vm", "odx", "gib", "estimated_seconds", "copy_seconds", "ratio"]
    return done[[*cols, "error_pct"]].reset_index(drop=True)


def eta_summary(accuracy_df: pd.DataFrame, within_pct: float = 20.0) -> pd.DataFrame:
    """ETA accuracy by ODX and overall: moves, median_ratio, mape_pct (mean absolute error) and
    within (the share of moves whose copy ended within ``within_pct`` of the estimate)."""

    def one(label: str, g: pd.DataFrame) -> dict[str, Any]:
        return {
            "odx": label,
            "moves": len(g),
            "median_ratio": g["ratio"].median(),
            "mape_pct": g["error_pct"].abs().mean(),
            "within": (g["error_pct"].abs() <= within_pct).mean() if len(g) else math.nan,
        }

    rows = [one(str(label), g) for label, g in accuracy_df.groupby("odx")]
    rows.append(one("all", accuracy_df))
    return pd.DataFrame(rows, columns=["odx", "moves", "median_ratio", "mape_pct", "within"])


# --------------------------------------------------------------------------------------------------
# rebalancing
# --------------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
MOVABLE_STATES = ("Running", "Off", "Saved")  # precheck refuses a paused or transitional VM
BLOCKER_LABELS = {
    ISO: "ISO attached",
    PASS_THROUGH: "pass-through disk",
    SHARED_VHDX: "shared VHDX",
}


def destination_for(volume_root: str, vm_name: str) -> str:
    """``<volume root>VMs\\<vm name>``, with the characters Windows refuses in a name replaced."""
    folder = _UNSAFE.sub("_", vm_name).strip(" .") or "vm"
    return volume_root.rstrip("\\/") + "\\VMs\\" + folder


@dataclass
class _Vol:
    key: tuple[str, str]
    host: str
    hosts: frozenset[str]  # lower-case names of the hosts that see it
    root: str
    kind: str
    capacity: int
    used: int
    used_before: int

    def pct(self, used: float | None = None) -> float:
        return 100.0 * (self.used if used is None else used) / self.capacity


@dataclass
class _Cand:
    host: str
    vm_id: str
    name: str
    home: tuple[str, str]
    total: int  # what the move copies
    on: dict[tuple[str, str], int] = field(default_factory=dict)  # bytes per volume key
    checkpoints: bool = False  # holds differencing disks (checkpoints)


class Proposal(list[MoveRequest]):
    """The proposed moves (a plain list of MoveRequest, ready for ``write_plan``) with the tables a
    reader needs next to them: ``details`` (one row per move), ``volumes`` (fill before and after)
    and ``unfixed`` (volumes still at or above the threshold, with the reason)."""

    def __init__(
        self,
        moves: Iterable[MoveRequest],
        details: pd.DataFrame,
        volumes: pd.DataFrame,
        unfixed: pd.DataFrame,
    ) -> None:
        super().__init__(moves)
        self.details = details
        self.volumes = volumes
        self.unfixed = unfixed

    @property
    def bytes_moved(self) -> int:
        return int(self.details["bytes"].sum()) if not self.details.empty else 0


def _min_cover(freed: list[int], cost: list[int], need: int, budget: int = 200_000) -> list[int]:
    """Indices of items whose ``freed`` sums to at least ``need`` at the least total ``cost``
    (then the fewest items). Branch and bound, exact within ``budget`` nodes, else the best found
    so far (seeded by a greedy cover). Every cost is at least its freed, which makes
    ``cost + what is still needed`` a valid lower bound."""
    n = len(freed)
    order = sorted(range(n), key=lambda i: (-freed[i], cost[i]))
    # greedy seed: the cheapest single item that covers the rest, else the largest and go on
    best: list[int] = []
    left = need
    pool = list(order)
    while left > 0 and pool:
        single = [i for i in pool if freed[i] >= left]
        pick = min(single, key=lambda i: cost[i]) if single else pool[0]
        best.append(pick)
        pool.remove(pick)
        left -= freed[pick]
    if left > 0:
        return []
    best_score = (sum(cost[i] for i in best), len(best))
    suffix = [0] * (n + 1)
    for pos in range(n - 1, -1, -1):
        suffix[pos] = suffix[pos + 1] + freed[order[pos]]
    nodes = 0
    chosen: list[int] = []

    def dfs(pos: int, got: int, spent: int) -> None:
        nonlocal best, best_score, nodes
        nodes += 1
        if got >= need:
            score = (spent, len(chosen))
            if score < best_score:
                best, best_score = list(chosen), score
            return
        if pos == n or nodes > budget or got + suffix[pos] < need:
            return
        if (spent + need - got, len(chosen) + 1) >= best_score:
            return
        i = order[pos]
        chosen.append(i)
        dfs(pos + 1, got + freed[i], spent + cost[i])
        chosen.pop()
        dfs(pos + 1, got, spent)

    if n <= 500:  # recursion depth is n
        dfs(0, 0, 0)
    return best


def rebalance(
    volumes: pd.DataFrame,
    vms: pd.DataFrame,
    threshold_pct: float = 85.0,
    *,
    disks: pd.DataFrame | None = None,
    margin_pct: float = 1.0,
    forecast: pd.DataFrame | None = None,
    moves_history: pd.DataFrame | None = None,
    exclude_volumes: Collection[str] = ("C:\\",),
    exclude_vms: Collection[str] = (),
) -> Proposal:
    """Storage moves that bring every volume at or above ``threshold_pct`` down to
    ``threshold_pct - margin_pct`` while moving as few bytes as possible.

    ``volumes``, ``vms`` and ``disks`` are the newest rows of ``volume_fill``, ``vm_growth`` and
    ``disks`` (see ``latest``). A storage move never changes host, so a VM's destinations are the
    other volumes of its own host and the shares that host sees; a destination must itself end at
    or below ``threshold_pct - margin_pct``. Volumes the forecast expects to cross (status not
    ``ok``) and ``exclude_volumes`` (roots; the system drive by default) are never destinations;
    ``exclude_vms`` (names or ids) never move. With ``disks``, a VM whose disks sit on several
    volumes frees on each what it really holds there. With ``moves_history``, a local
    destination the history shows an ODX copy to is preferred over other local ones (faster).

    Per full volume (fullest first), the set of its VMs that frees enough at the least total bytes
    copied is searched exactly (branch and bound), then each chosen VM goes, largest first, to the
    eligible destination with the most room left; a VM that fits nowhere is dropped and the search
    repeated. VMs with checkpoints (differencing disks, seen in ``disks``) are used only when the
    others cannot free enough; VMs precheck would refuse (an attached ISO, a pass-through or shared
    disk, seen in ``disks``; a state other than Running, Off or Saved) never move. A volume that
    cannot be brought down is reported in ``unfixed`` and none of its VMs moves: a partial move
    copies bytes without solving anything.
    """
    limit_pct = threshold_pct - margin_pct
    excluded_roots = {_root_key(r) for r in exclude_volumes}
    excluded_vms = {v.lower() for v in exclude_vms}

    vols: dict[tuple[str, str], _Vol] = {}
    for row in volumes.itertuples(index=False):
        key = _volume_key(str(row.host), str(row.volume), str(row.kind))
        vol = vols.get(key)
        if vol is None:
            used = int(row.capacity) - int(row.free)
            vols[key] = _Vol(
                key=key,
                host=str(row.host),
                hosts=frozenset({str(row.host).lower()}),
                root=str(row.volume),
                kind=str(row.kind),
                capacity=int(row.capacity),
                used=used,
                used_before=used,
            )
        else:  # a share reported by another host
            vol.hosts = vol.hosts | {str(row.host).lower()}
            vol.host = ", ".join(sorted({*vol.host.split(", "), str(row.host)}))
    vols = {k: v for k, v in vols.items() if v.capacity > 0}

    crossing: set[tuple[str, str]] = set()
    if forecast is not None and not forecast.empty:
        for row in forecast.itertuples(index=False):
            if row.status != "ok":
                for host in str(row.host).split(", "):
                    crossing.add(_volume_key(host, str(row.volume), str(row.kind)))

    odx_seen: set[tuple[str, str, str]] = set()
    if moves_history is not None and not moves_history.empty:
        done = moves_history[(moves_history["status"] == "completed")]
        for row in done[done["odx"].fillna(False).astype(bool)].itertuples(index=False):
            odx_seen.add(
                (
                    str(row.host).lower(),
                    _root_key(str(row.source_volume)),
                    _root_key(str(row.destination_volume)),
                )
            )

    def key_of(host: str, root: str) -> tuple[str, str]:
        for k in ((host.lower(), _root_key(root)), ("*", _root_key(root))):
            if k in vols:
                return k
        return (host.lower(), _root_key(root))

    cands: list[_Cand] = []
    names_per_host: dict[tuple[str, str], int] = {}
    for row in vms.itertuples(index=False):
        nk = (str(row.host).lower(), str(row.vm_name).lower())
        names_per_host[nk] = names_per_host.get(nk, 0) + 1
    disk_bytes: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
    with_checkpoints: set[tuple[str, str]] = set()
    blocked: dict[tuple[str, str], str] = {}  # VMs precheck would refuse, and why
    if disks is not None and not disks.empty:
        for row in disks.itertuples(index=False):
            vm_key = (str(row.host).lower(), str(row.vm_id).lower())
            if row.type in BLOCKER_TYPES:
                blocked[vm_key] = BLOCKER_LABELS[str(row.type)]
                continue
            per = disk_bytes.setdefault(vm_key, {})
            k = key_of(str(row.host), str(row.volume))
            per[k] = per.get(k, 0) + int(row.file_size)
            if row.type == "Differencing":
                with_checkpoints.add(vm_key)
    stuck: dict[tuple[str, str], list[str]] = {}  # per volume: VMs that cannot move, and why
    for row in vms.itertuples(index=False):
        host, vm_id, name = str(row.host), str(row.vm_id), str(row.vm_name)
        state = str(getattr(row, "state", "Running"))
        why = blocked.get((host.lower(), vm_id.lower())) or (
            "" if state in MOVABLE_STATES else f"{state.lower()}"
        )
        if why:
            home_key = key_of(host, str(row.volume))
            stuck.setdefault(home_key, []).append(f"{name} ({why})")
            continue
        home = key_of(host, str(row.volume))
        total = int(row.file_bytes)
        on = dict(disk_bytes.get((host.lower(), vm_id.lower()), {}))
        # what the disks do not account for (configuration, state files) sits with the config
        on[home] = on.get(home, 0) + max(0, total - sum(on.values()))
        total = max(total, sum(on.values()))
        # a name shared by two VMs of one host is ambiguous in a plan; the id is not
        label = name if names_per_host[(host.lower(), name.lower())] == 1 else vm_id
        if name.lower() in excluded_vms or vm_id.lower() in excluded_vms:
            continue
        cands.append(
            _Cand(
                host=host,
                vm_id=vm_id,
                name=label,
                home=home,
                total=total,
                on=on,
                checkpoints=(host.lower(), vm_id.lower()) in with_checkpoints,
            )
        )

    def limit(vol: _Vol) -> float:
        return vol.capacity * limit_pct / 100.0

    def destinations(c: _Cand, used: dict[tuple[str, str], int]) -> list[_Vol]:
        fits = []
        for vol in vols.values():
            if (
                vol.key == c.home
                or c.host.lower() not in vol.hosts
                or vol.key in crossing
                or _root_key(vol.root) in excluded_roots
            ):
                continue
            gain = c.total - c.on.get(vol.key, 0)
            if used[vol.key] + gain <= limit(vol):
                fits.append(vol)

        def preference(vol: _Vol) -> tuple[int, int, float]:
            odx = (c.host.lower(), c.home[1], _root_key(vol.root)) in odx_seen
            room = limit(vol) - used[vol.key] - (c.total - c.on.get(vol.key, 0))
            return (0 if vol.kind == "local" else 1, 0 if odx else 1, -room)

        return sorted(fits, key=preference)

    planned: list[tuple[_Cand, _Vol]] = []
    moved: set[str] = set()
    unfixed: list[dict[str, Any]] = []
    full = sorted(
        (v for v in vols.values() if v.pct() >= threshold_pct),
        key=lambda v: v.pct(),
        reverse=True,
    )

    def cover(vol: _Vol, pool: list[_Cand], need: int) -> tuple[list[tuple[_Cand, _Vol]], str]:
        """The cheapest set of ``pool`` that frees ``need`` on ``vol`` and fits elsewhere."""
        pool = list(pool)
        reason = "holds no VM that could move"
        while pool:
            used = {k: v.used for k, v in vols.items()}
            movable = [c for c in pool if destinations(c, used)]
            room = sum(c.on[vol.key] for c in movable)
            if room < need:
                return [], (
                    f"needs {need / GiB:,.1f} GiB freed; the VMs that fit on another volume of "
                    f"their host hold {room / GiB:,.1f} GiB here"
                )
            picks = _min_cover([c.on[vol.key] for c in movable], [c.total for c in movable], need)
            trial: list[tuple[_Cand, _Vol]] = []
            misfit: _Cand | None = None
            for c in sorted((movable[i] for i in picks), key=lambda c: -c.total):
                options = destinations(c, used)
                if not options:
                    misfit = c
                    break
                trial.append((c, options[0]))
                for k, b in c.on.items():
                    if k in used:
                        used[k] -= b
                used[options[0].key] += c.total
            if misfit is None:
                return trial, ""
            # it fit alone but not next to the others: search again without it
            pool.remove(misfit)
            reason = "the VMs that would free enough do not fit elsewhere together"
        return [], reason

    for vol in full:
        need = vol.used - int(limit(vol))
        if need <= 0:  # earlier moves already freed it
            continue
        pool = [c for c in cands if c.on.get(vol.key, 0) > 0 and c.vm_id not in moved]
        # a VM with checkpoints is a last resort: prechecks flag its chain, and a merge running
        # at move time blocks the move
        plain = [c for c in pool if not c.checkpoints]
        chosen, reason = cover(vol, plain, need)
        if not chosen and len(plain) < len(pool):
            chosen, reason = cover(vol, pool, need)
        if not chosen:
            if vol.key in stuck:
                reason += "; cannot move: " + ", ".join(stuck[vol.key])
            unfixed.append(
                {
                    "host": vol.host,
                    "volume": vol.root,
                    "used_pct": vol.pct(),
                    "need_gib": need / GiB,
                    "reason": reason,
                }
            )
            continue
        for c, dest in chosen:
            for k, b in c.on.items():
                if k in vols:
                    vols[k].used -= b
            dest.used += c.total
            moved.add(c.vm_id)
            planned.append((c, dest))

    requests = [
        MoveRequest(
            host=c.host,
            vm=c.name,
            mode="all",
            destination=destination_for(dest.root, c.name),
        )
        for c, dest in planned
    ]
    details = pd.DataFrame(
        [
            {
                "host": c.host,
                "vm": c.name,
                "vm_id": c.vm_id,
                "gib": c.total / GiB,
                "bytes": c.total,
                "from_volume": vols[c.home].root if c.home in vols else c.home[1],
                "to_volume": dest.root,
                "destination": req.destination,
                "odx_seen": (c.host.lower(), c.home[1], _root_key(dest.root)) in odx_seen,
            }
            for (c, dest), req in zip(planned, requests, strict=True)
        ],
        columns=[
            "host",
            "vm",
            "vm_id",
            "gib",
            "bytes",
            "from_volume",
            "to_volume",
            "destination",
            "odx_seen",
        ],
    )
    touched = {c.home for c, _ in planned} | {d.key for _, d in planned}
    still = {(u["host"], u["volume"]) for u in unfixed}
    vol_rows = []
    for vol in sorted(vols.values(), key=lambda v: (v.host, v.root)):
        if vol.pct(vol.used_before) >= threshold_pct:
            status = "still above" if (vol.host, vol.root) in still else "fixed"
        elif vol.key in touched:
            status = "destination"
        else:
            status = "unchanged"
        vol_rows.append(
            {
                "host": vol.host,
                "volume": vol.root,
                "kind": vol.kind,
                "capacity_gib": vol.capacity / GiB,
                "used_pct_before": vol.pct(vol.used_before),
                "used_pct_after": vol.pct(),
                "change_gib": (vol.used - vol.used_before) / GiB,
                "status": status,
            }
        )
    return Proposal(
        requests,
        details,
        pd.DataFrame(vol_rows),
        pd.DataFrame(unfixed, columns=["host", "volume", "used_pct", "need_gib", "reason"]),
    )


def write_plan(moves: Iterable[MoveRequest], path: str | Path, comment: str = "") -> Path:
    """Write ``moves`` as a plan file (YAML, ``hvmove.models.Plan``) and return its path. A plan
    needs at least one move: an empty proposal raises ValueError rather than writing a file that
    ``hvmove precheck`` would refuse."""
    plan = Plan(moves=list(moves))  # validates, and refuses an empty plan
    entries = []
    for m in plan.moves:
        rest = m.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        entry = {"host": m.host, "vm": m.vm, "mode": m.mode}
        entry.update({k: v for k, v in rest.items() if k not in entry})
        entries.append(entry)
    text = yaml.safe_dump({"moves": entries}, sort_keys=False, allow_unicode=True, width=1000)
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    out = Path(path)
    out.write_text(header + text, encoding="utf-8")
    return out


def read_plan(path: str | Path) -> Plan:
    """A plan file parsed and validated, as ``write_plan`` wrote it."""
    return Plan.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------------
# plots (matplotlib imported on use)
# --------------------------------------------------------------------------------------------------


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes: a notebook on the Agg backend displays figures through this."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def plot_fill(
    volume_fill_df: pd.DataFrame,
    forecast: pd.DataFrame | None = None,
    threshold_pct: float = 85.0,
    horizon_days: float = 30.0,
) -> Figure:
    """Fill (percent) over time, one panel per host (shared volumes in their own), with the
    threshold and, given a forecast, each volume's trend dashed ``horizon_days`` ahead."""
    from matplotlib.figure import Figure

    vf = collapse_shared(volume_fill_df)
    panels = sorted(vf["key"].map(lambda k: k[0]).unique()) if not vf.empty else []
    fig = Figure(figsize=(11, 2.8 * max(1, len(panels))))
    axes = fig.subplots(max(1, len(panels)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=False):
        part = vf[vf["key"].map(lambda k, p=panel: k[0] == p)]
        for _volume, g in part.groupby("volume"):
            line = ax.plot(g["taken_at"], g["used_pct"], label=g["volume"].iloc[0])[0]
            if forecast is None:
                continue
            hit = forecast[
                (forecast["volume"] == g["volume"].iloc[0])
                & (forecast["host"] == g["host"].iloc[-1])
            ]
            if hit.empty or pd.isna(hit["growth_pct_per_day"].iloc[0]):
                continue
            f = hit.iloc[0]
            end = f["as_of"] + pd.Timedelta(days=horizon_days)
            ends = [f["trend_pct"], f["trend_pct"] + f["growth_pct_per_day"] * horizon_days]
            ax.plot([f["as_of"], end], ends, ls="--", color=line.get_color())
        ax.axhline(threshold_pct, color="red", lw=1, ls=":")
        title = "shared" if panel == "*" else panel
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel("used %")
        ax.set_ylim(0, 100)
        ax.legend(loc="upper left", fontsize=8, ncol=5)
        ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def plot_throughput(pairs: pd.DataFrame) -> Figure:
    """Median MB/s per host and volume pair (log scale), ODX and not in two colours."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = {"ODX": "tab:green", "no ODX": "tab:blue", "unknown": "tab:gray"}
    fig = Figure(figsize=(9, 0.35 * max(4, len(pairs)) + 1))
    ax = fig.subplots()
    if not pairs.empty:
        labels = pairs["pair"] + "  (" + pairs["moves"].astype(str) + ")"
        ax.barh(labels, pairs["median_mbps"], color=[colors[o] for o in pairs["odx"]])
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.legend(
            handles=[
                Patch(color=color, label=label)
                for label, color in colors.items()
                if label in set(pairs["odx"])
            ],
            loc="lower right",
        )
    ax.set_xlabel("median MB/s (log scale); moves in brackets")
    ax.grid(axis="x", alpha=0.3, which="both")
    return fig


def plot_eta(accuracy: pd.DataFrame, within_pct: float = 20.0) -> Figure:
    """Estimated against actual copy minutes (log-log): the diagonal is a perfect ETA, the band
    is ``within_pct``; points above the diagonal took longer than announced."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 6))
    ax = fig.subplots()
    colors = {"ODX": "tab:green", "no ODX": "tab:blue", "unknown": "tab:gray"}
    for label, g in accuracy.groupby("odx"):
        ax.scatter(
            g["estimated_seconds"] / 60,
            g["copy_seconds"] / 60,
            label=str(label),
            color=colors.get(str(label), "tab:gray"),
            alpha=0.8,
        )
    if not accuracy.empty:
        lo = min(accuracy["estimated_seconds"].min(), accuracy["copy_seconds"].min()) / 60 / 1.5
        hi = max(accuracy["estimated_seconds"].max(), accuracy["copy_seconds"].max()) / 60 * 1.5
        xs = np.array([lo, hi])
        ax.plot(xs, xs, color="black", lw=1)
        band = within_pct / 100
        ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="gray", alpha=0.15)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("estimated minutes")
    ax.set_ylabel("actual copy minutes")
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_rebalance(proposal: Proposal, threshold_pct: float = 85.0) -> Figure:
    """Fill before and after the proposal for every volume it touches."""
    from matplotlib.figure import Figure

    vols = proposal.volumes
    vols = vols[vols["status"] != "unchanged"] if not vols.empty else vols
    fig = Figure(figsize=(9, 0.45 * max(3, len(vols)) + 1))
    ax = fig.subplots()
    if not vols.empty:
        labels = vols["host"] + " " + vols["volume"]
        y = np.arange(len(vols))
        ax.barh(y - 0.2, vols["used_pct_before"], height=0.4, label="before", color="tab:gray")
        ax.barh(y + 0.2, vols["used_pct_after"], height=0.4, label="after", color="tab:blue")
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    ax.axvline(threshold_pct, color="red", lw=1, ls=":")
    ax.set_xlim(0, 100)
    ax.set_xlabel("used %")
    return fig


def describe_run(now: datetime | None = None) -> str:
    """A one-line provenance note for a written plan."""
    stamp = (now or datetime.now().astimezone()).isoformat(timespec="seconds")
    return f"proposed by hvmove.analysis.rebalance on {stamp}; run `hvmove precheck` before use"
