"""Capacity analysis over the store: loaders that return DataFrames, and the analysis the notebook
shows (fill forecast per volume, throughput per volume pair with and without ODX, ETA accuracy,
and a rebalancing proposal written out as a plan file).

Every function takes and returns plain DataFrames so the notebook stays a thin page of calls and
the logic is unit-tested. The modules: ``loaders`` (store -> DataFrames), ``volumes`` (the volume
key), ``forecast``, ``throughput`` (per pair, ODX, ETA accuracy), ``rebalance`` (proposal and plan
files) and ``plots`` (matplotlib imported on use: the core library must import without it).
``from hvmove import analysis`` gives all of them under one name.
"""

from hvmove.analysis.forecast import Trend, fit_trend, forecast_fill
from hvmove.analysis.loaders import (
    MB,
    GiB,
    StoreLike,
    disks,
    latest,
    moves,
    throughput_samples,
    vm_growth,
    volume_fill,
)
from hvmove.analysis.plots import (
    figure_png,
    plot_eta,
    plot_fill,
    plot_rebalance,
    plot_throughput,
)
from hvmove.analysis.rebalance import (
    BLOCKER_LABELS,
    MOVABLE_STATES,
    Proposal,
    describe_run,
    destination_for,
    read_plan,
    rebalance,
    write_plan,
)
from hvmove.analysis.throughput import (
    eta_accuracy,
    eta_summary,
    odx_comparison,
    rates_alone,
    throughput_by_pair,
)
from hvmove.analysis.volumes import SHARED_KINDS, collapse_shared, root_key, volume_key

__all__ = [
    "BLOCKER_LABELS",
    "MB",
    "MOVABLE_STATES",
    "SHARED_KINDS",
    "GiB",
    "Proposal",
    "StoreLike",
    "Trend",
    "collapse_shared",
    "describe_run",
    "destination_for",
    "disks",
    "eta_accuracy",
    "eta_summary",
    "figure_png",
    "fit_trend",
    "forecast_fill",
    "latest",
    "moves",
    "odx_comparison",
    "plot_eta",
    "plot_fill",
    "plot_rebalance",
    "plot_throughput",
    "rates_alone",
    "read_plan",
    "rebalance",
    "root_key",
    "throughput_by_pair",
    "throughput_samples",
    "vm_growth",
    "volume_fill",
    "volume_key",
    "write_plan",
]
