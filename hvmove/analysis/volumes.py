"""One identity per volume, even when several hosts report it: the volume key and the collapse of
shared volumes (SMB shares, CSVs) to one row. Every part of the analysis keys volumes through
``volume_key`` here, so a change of the rule is a change in one place."""

from __future__ import annotations

import math

import pandas as pd

from hvmove.paths import UNKNOWN_CLUSTER, volume_scope
from hvmove.paths import volume_root as root_key

SHARED_KINDS = ("smb", "csv")  # volumes several hosts see: one volume, not one per host


def volume_key(host: str, volume: str, kind: str, cluster: str | None = None) -> tuple[str, str]:
    """The identity of the volume ``host`` reports as ``volume`` of ``kind``: the project's one
    rule (hvmove.paths.volume_scope), with every shared scope the analysis cannot tell apart
    (a share; a CSV whose cluster the snapshot does not name) in the one "*" panel."""
    scope = volume_scope(kind, host=host, cluster=cluster)
    return (scope if scope not in ("", UNKNOWN_CLUSTER) else "*", root_key(volume))


def cluster_of(value: object) -> str | None:
    """A cluster name from a frame cell: empty, None or NaN (an older snapshot) is unknown."""
    return value if isinstance(value, str) and value else None


def collapse_shared(vf: pd.DataFrame) -> pd.DataFrame:
    """``volume_fill`` rows with each shared volume (SMB share, CSV) once per snapshot instead of
    once per reporting host; ``host`` lists those hosts, ``hosts`` holds them as a tuple."""
    if vf.empty:
        out = vf.copy()
        out["key"] = pd.Series(dtype=object)
        out["hosts"] = pd.Series(dtype=object)
        return out
    df = vf.copy()
    clusters = df["cluster"] if "cluster" in df.columns else [None] * len(df)
    df["key"] = [
        volume_key(h, v, k, cluster_of(c))
        for h, v, k, c in zip(df["host"], df["volume"], df["kind"], clusters, strict=True)
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
