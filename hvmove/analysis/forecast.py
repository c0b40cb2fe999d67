"""Fill forecast per volume: a trend line fitted with one-off steps (moves) taken out, and the day
each volume crosses a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hvmove.analysis.loaders import GiB
from hvmove.analysis.volumes import collapse_shared


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


def _forecast_row(g: pd.DataFrame, threshold_pct: float, horizon_days: float) -> dict[str, Any]:
    """The forecast of one volume from its ``collapse_shared`` rows, oldest first."""
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
    return {
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
    rows = [
        _forecast_row(g.sort_values("taken_at"), threshold_pct, horizon_days)
        for _key, g in vf.groupby("key", sort=False)
    ]
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
