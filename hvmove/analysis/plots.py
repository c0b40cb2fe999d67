"""Plots for the notebook; matplotlib is imported on use (the core library imports without it)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hvmove.analysis.rebalance import Proposal
from hvmove.analysis.volumes import collapse_shared

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
