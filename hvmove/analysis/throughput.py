"""Throughput of completed copies per volume pair, with and without ODX, and ETA accuracy."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from hvmove.analysis.loaders import MB, GiB, StoreLike


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


def rates_alone(store: StoreLike) -> pd.DataFrame:
    """What the nightly planner learns from this store (``hvmove.learning``, the model of
    ``hvmove.throughput``): per volume pair and ODX class, the rate a copy reaches alone (P50 and
    P90, MB/s; copies that shared their volumes corrected by the recorded concurrency), and per
    class the ratio of that rate to the bandwidth probe, used for pairs with too few moves.

    Columns: source_volume, destination_volume, odx, moves, shared (moves that ran beside
    others), p50_mbps, p90_mbps, basis ("pair", or "class" for the class rows)."""
    from hvmove import learning, throughput
    from hvmove.store import Store

    opened = store if isinstance(store, Store) else Store(store)
    try:
        learner = throughput.Learner(learning.observations(opened))
    finally:
        if opened is not store:
            opened.engine.dispose()
    rows: list[dict[str, Any]] = []
    for key in sorted({*learner.alone, *learner.shared}):
        src, dst, odx = key
        rates = learner.pair(src, dst, odx)
        est = throughput.Estimate(*throughput.points(rates), "pair")
        rows.append(
            {
                "source_volume": src,
                "destination_volume": dst,
                "odx": "ODX" if odx else "no ODX",
                "moves": len(learner.alone.get(key, [])) + len(learner.shared.get(key, [])),
                "shared": len(learner.shared.get(key, [])),
                "p50_mbps": est.p50 / MB,
                "p90_mbps": est.p90 / MB,
                "basis": "pair",
            }
        )
    for cls, ratios in sorted(learner.ratios.items()):
        r50, r90 = throughput.points(ratios)
        rows.append(
            {
                "source_volume": "(any)",
                "destination_volume": "(any)",
                "odx": "ODX" if cls == throughput.ODX else "no ODX",
                "moves": len(ratios),
                "shared": 0,
                "p50_mbps": r50,  # for the class rows: the ratio to the probe, not MB/s
                "p90_mbps": r90,
                "basis": "class ratio to probe",
            }
        )
    cols = ["source_volume", "destination_volume", "odx", "moves", "shared", "p50_mbps"]
    return pd.DataFrame(rows, columns=[*cols, "p90_mbps", "basis"])
