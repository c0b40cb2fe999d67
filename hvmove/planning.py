"""The one planning pipeline: window -> resolve plan -> prechecks -> planner inputs -> schedule.
`hvmove plan` prints what it returns; the nightly flow runs it (its prechecks as a Prefect task)
and then keeps re-planning as moves finish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from time import monotonic

from hvmove import batch, learning, planner
from hvmove.config import Config
from hvmove.inventory import HostInventory
from hvmove.models import PrecheckReport
from hvmove.plans import ResolvedMove
from hvmove.store import Store

Prechecks = Callable[[Config, list[ResolvedMove], Store], list[PrecheckReport]]


def _prechecks(cfg: Config, moves: list[ResolvedMove], store: Store) -> list[PrecheckReport]:
    # the planner reserves space across the batch itself: the prechecks do not
    return batch.precheck_all(cfg, moves, reserve=False, store=store)


@dataclass
class Night:
    window: planner.Window
    zone: str
    moves: list[ResolvedMove]
    inventories: list[HostInventory]
    reports: list[PrecheckReport]
    inputs: batch.NightInputs
    schedule: planner.Schedule
    # seconds allowed before each copy until the night has seen one begin (learning)
    startup_prior: float = 0.0

    @property
    def limits(self) -> planner.Limits:
        assert self.inputs.limits is not None
        return self.inputs.limits


def window(
    cfg: Config, text: str | None, now: datetime, margin_minutes: float | None = None
) -> planner.Window:
    """WINDOW ('HH:MM-HH:MM', 'now', 'now+MINUTES') in the config's one time zone."""
    d = cfg.defaults
    margin = timedelta(
        minutes=d.window_margin_minutes if margin_minutes is None else margin_minutes
    )
    return batch.any_window(text or d.window, now, d.timezone, margin)


def prepare(
    cfg: Config,
    plan_file: str | Path,
    store: Store,
    *,
    now: datetime,
    window_text: str | None = None,
    margin_minutes: float | None = None,
    prechecks: Prechecks = _prechecks,
    window_at: datetime | None = None,
) -> Night:
    """Every step before the first move starts; any user mistake is one ConfigError line.
    ``window_at``: the time whose window this is (a scheduled night's start), default now."""
    win = window(cfg, window_text, window_at or now, margin_minutes)
    moves, inventories = batch.load_and_resolve(cfg, plan_file, store)
    began = monotonic()
    reports = prechecks(cfg, moves, store)
    checked = monotonic() - began
    inputs = batch.night_inputs(cfg, moves, reports, inventories, store)
    assert inputs.limits is not None
    slots = sum(inputs.limits.hosts.values())
    startup = learning.startup_prior(checked, len(moves), slots)
    typical, slow = learning.startup_allowance([], startup)  # as the night's first re-plan
    schedule = planner.plan(
        inputs.moves,
        inputs.volumes,
        inputs.limits,
        win,
        now,
        bandwidth=inputs.bandwidth,
        startup=typical,
        startup_p90=slow,
    )
    return Night(win, cfg.defaults.timezone, moves, inventories, reports, inputs, schedule, startup)
