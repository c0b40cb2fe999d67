"""The planner's inputs and outputs (pydantic models at its boundary) and its constants."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

GiB = 1024**3

# A move holds its slots for at least this long even with (almost) nothing to copy: the create,
# switch and delete steps take time, and a zero-length interval would make limits meaningless.
MIN_MOVE_SECONDS = 1.0

# With too few samples there is no trustworthy tail: assume the bad nights run this much slower.
FEW_SAMPLES_PESSIMISM = 0.7
TAIL_SAMPLES = 10

# Random reorderings tried after the fixed priority rules; seeded, so a plan is reproducible.
IMPROVEMENT_ROUNDS = 16

DeferReason = Literal["window", "space", "limit"]
# ("host", name) | ("vm", "host|vm") | ("source", volume key) | ("destination", volume key)
Resource = tuple[str, str]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- inputs --------------------------------------------------------------------------------------
class Throughput(_Frozen):
    """Copy rate of one move in bytes/s, summarised as two points of its distribution.

    ``p50`` is the median rate; ``p90`` is the rate behind the P90 duration (nine nights in ten
    are at least this fast), so it is the lower of the two.
    """

    p50: float = Field(gt=0)
    p90: float = Field(gt=0)

    @model_validator(mode="after")
    def _pessimistic(self) -> Self:
        if self.p90 > self.p50:
            raise ValueError("p90 is the pessimistic rate and cannot exceed p50")
        return self

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> Throughput:
        """Summarise observed rates (bandwidth probes, past moves between the same volumes)."""
        rates = sorted(r for r in samples if r > 0)
        if not rates:
            raise ValueError("no positive rate to estimate from")
        median = statistics.median(rates)
        if len(rates) >= TAIL_SAMPLES:
            tail = statistics.quantiles(rates, n=10, method="inclusive")[0]
        else:
            tail = min(rates[0], median * FEW_SAMPLES_PESSIMISM)
        return cls(p50=median, p90=min(tail, median))


class PlannedMove(_Frozen):
    """One VM move that passed its prechecks, with what the planner needs to place it."""

    id: str = Field(min_length=1)
    host: str = Field(min_length=1)
    vm: str = Field(min_length=1)
    source_volumes: list[str] = Field(min_length=1, description="volume keys (see volume_key)")
    destination_volume: str = Field(min_length=1)
    bytes: int = Field(ge=0, description="bytes to copy")
    reserve_bytes: int | None = Field(
        None, ge=0, description="bytes to reserve at the destination; default: bytes"
    )
    throughput: Throughput
    odx: bool = False
    shares: list[str] = Field(
        default_factory=list,
        description="bandwidth resources its copy shares with others (hvmove.throughput); "
        "with them, its rate is planned by hvmove.sharing instead of the volume model",
    )

    @property
    def reservation(self) -> int:
        # the caller may reserve virtual sizes instead (thin-provisioning safety, hyperv.md §5.2)
        return self.bytes if self.reserve_bytes is None else self.reserve_bytes


class VolumeState(_Frozen):
    """A volume as inventory saw it. The headroom is the stricter of ``headroom_bytes`` and
    ``headroom_percent`` of capacity: that much must stay free after every reservation."""

    key: str = Field(min_length=1)
    capacity: int = Field(gt=0)
    free: int = Field(ge=0)
    headroom_percent: float = Field(10.0, ge=0, le=90)
    headroom_bytes: int = Field(0, ge=0)
    read_bandwidth: float | None = Field(None, gt=0, description="bytes/s; None: not a bound")
    write_bandwidth: float | None = Field(None, gt=0, description="bytes/s; None: not a bound")
    label: str = ""

    @model_validator(mode="after")
    def _free_fits(self) -> Self:
        if self.free > self.capacity:
            raise ValueError(f"{self.key}: free {self.free} exceeds capacity {self.capacity}")
        return self

    @property
    def floor(self) -> int:
        return max(self.headroom_bytes, math.ceil(self.capacity * self.headroom_percent / 100))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        scope, sep, path = self.key.partition("|")
        return f"{path} on {scope}" if sep else self.key


class Limits(_Frozen):
    """Concurrent moves allowed per host and per volume (as a source and as a destination)."""

    hosts: dict[str, int] = Field(description="host -> MaximumStorageMigrations, maybe capped")
    source_volume: int = Field(2, ge=0)
    destination_volume: int = Field(2, ge=0)
    source_overrides: dict[str, int] = {}
    destination_overrides: dict[str, int] = {}

    @model_validator(mode="after")
    def _non_negative(self) -> Self:
        for table in (self.hosts, self.source_overrides, self.destination_overrides):
            if any(v < 0 for v in table.values()):
                raise ValueError("a concurrency limit cannot be negative")
        return self

    @staticmethod
    def host_limit(maximum_storage_migrations: int, cap: int | None = None) -> int:
        """The host's own limit, lowered by configuration but never raised above it: past it
        Hyper-V fails the new move instead of queueing it (hyperv.md §3.1)."""
        return maximum_storage_migrations if cap is None else min(cap, maximum_storage_migrations)

    def host(self, name: str) -> int:
        folded = {h.lower(): n for h, n in self.hosts.items()}
        if name.lower() not in folded:
            raise ValueError(f"no concurrency limit for host {name!r}: read its settings first")
        return folded[name.lower()]

    def source(self, key: str) -> int:
        return self.source_overrides.get(key, self.source_volume)

    def destination(self, key: str) -> int:
        return self.destination_overrides.get(key, self.destination_volume)


class Window(_Frozen):
    """The night's window; no move may be planned to finish (at P90) after ``end - margin``."""

    start: AwareDatetime
    end: AwareDatetime
    margin: timedelta = timedelta(0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.margin < timedelta(0):
            raise ValueError("the safety margin cannot be negative")
        if self.last_finish <= self.start:
            raise ValueError("the window ends (less its margin) before it starts")
        return self

    @property
    def last_finish(self) -> datetime:
        # In UTC: Python adds and subtracts datetimes of one zone as wall-clock times, which is
        # an hour off on a daylight-saving night.
        return self.end.astimezone(UTC) - self.margin


class RunningMove(_Frozen):
    """A move in flight when re-planning. It holds its slots until ``expected_finish`` (the
    caller's current estimate); if that is already past, it holds them through the window, since
    nothing says when it will really end. ``reserved_bytes`` is the part of its reservation the
    destination's ``free`` does not show yet (typically the bytes still to copy)."""

    id: str = Field(min_length=1)
    host: str = Field(min_length=1)
    vm: str = Field(min_length=1)
    source_volumes: list[str] = Field(min_length=1)
    destination_volume: str = Field(min_length=1)
    expected_finish: AwareDatetime
    reserved_bytes: int = Field(0, ge=0)
    shares: list[str] = Field(default_factory=list, description="as PlannedMove.shares")
    rate: float | None = Field(None, gt=0, description="its planned P90 rate (bytes/s)")
    bytes_left: int | None = Field(
        None, ge=0, description="bytes its copy still has to move, as last seen (None: unknown)"
    )
    copied: bool = Field(
        False,
        description="its copy is over (verification and cleanup left): it holds its VM and its "
        "space, no longer a host slot, a volume slot or bandwidth",
    )


# --- outputs -------------------------------------------------------------------------------------
class ScheduledMove(_Frozen):
    id: str
    host: str
    vm: str
    source_volumes: list[str]
    destination_volume: str
    bytes: int
    odx: bool
    start: datetime
    finish_p50: datetime
    finish_p90: datetime
    rate_p50: float = Field(description="bytes/s after volume sharing")
    rate_p90: float


class DeferredMove(_Frozen):
    id: str
    host: str
    vm: str
    reason: DeferReason
    detail: str


class Schedule(_Frozen):
    origin: datetime = Field(description="when the schedule begins: now, or the window start")
    window: Window
    admitted: list[ScheduledMove] = Field(description="in start order")
    deferred: list[DeferredMove]
    makespan_seconds: float = Field(description="origin to the last P90 finish, running included")
    bytes_admitted: int
    bytes_deferred: int

    def due(self, at: datetime) -> list[ScheduledMove]:
        """The admitted moves the flow should start by ``at``."""
        return [m for m in self.admitted if m.start <= at]
