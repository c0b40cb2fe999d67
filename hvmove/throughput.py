"""The throughput model: how fast storage moves copy when several run at once, and what past
moves teach about the next ones. One model for the lab's move engine, the history generator, the
nightly planner and the capacity notebook.

**Sharing.** A copy draws on a set of *bandwidth resources*, each with a capacity in bytes/s:

- a host copy (no ODX) reads its source volume and writes its destination volume through the
  host: it uses both volumes (``vol:<key>``) and, for volumes on a storage array, the array
  (``array:<name>``: CSVs of one array share its controllers);
- an ODX copy (both volumes on one ODX-capable array, hyperv.md §5.4 [ODX-ASK, ODX-DEP]) is done
  inside the array from tokens and does not cross the host's path to the volumes: it uses only
  the array's offload engine (``odx:<name>``).

Each copy also has a *demand*: the rate it reaches alone (its efficiency times the slowest of its
resources, or the array's offload rate for ODX). Concurrent copies split every resource max-min
fairly (progressive filling): each gets the same share of a saturated resource, unless its own
demand or another resource holds it lower, and what it leaves goes to the others.

Documented (cited where modelled): ODX only between volumes of one ODX array, with a large
speedup and low host load (ODX-OV, ODX-DEP); the host's ``MaximumStorageMigrations`` caps
concurrent storage moves (SVH, hyperv.md §3.1); storage migration is an unbuffered copy that
competes with other I/O on both volumes (SAV, hyperv.md §5.5). **Model assumptions** (not
documented by Microsoft): max-min fair sharing, one bandwidth per volume for reads and writes
together, an array as one shared resource, and the per-move efficiency range below (guest I/O,
fragmentation, ODX token sizes make two copies of one pair differ).

**Learning.** A finished copy's observed rate is a share, not a speed: with ``k`` copies on its
resources it got about ``1/k`` of a saturated one. ``standalone_rate`` turns an observation into
the rate the copy would have had alone (observed times the mean concurrency recorded with its
samples, capped at what its resources allow); ``Learner`` summarises those per volume pair and,
where a pair has too few moves, per class (ODX or host copy) as a ratio to the bandwidth probe.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ODX = "odx"
HOST = "host"
CopyClass = str  # ODX | HOST

# Per-move efficiency (rate reached alone over the nominal rate), uniform in this range. A model
# assumption: ODX copies vary more (token size, array load) than host copies.
EFFICIENCY: dict[CopyClass, tuple[float, float]] = {HOST: (0.72, 1.0), ODX: (0.45, 1.0)}

# A pair's own history is trusted from this many moves on; below it the class ratio is used.
PAIR_MIN_MOVES = 3


def copy_class(odx: bool) -> CopyClass:
    return ODX if odx else HOST


def volume_resource(key: str) -> str:
    return f"vol:{key}"


def array_resource(array: str) -> str:
    return f"array:{array}"


def offload_resource(array: str) -> str:
    return f"odx:{array}"


def copy_resources(
    source: str, destination: str, *, odx_array: str | None, arrays: Mapping[str, str | None]
) -> tuple[str, ...]:
    """The resources one copy uses: the ODX array's offload engine, or the two volumes and the
    arrays under them (each once). ``arrays`` maps a volume key to its array (None: none)."""
    if odx_array:
        return (offload_resource(odx_array),)
    out = [volume_resource(source), volume_resource(destination)]
    for key in (source, destination):
        array = arrays.get(key)
        if array:
            out.append(array_resource(array))
    return tuple(dict.fromkeys(out))


def draw_efficiency(cls: CopyClass, rng: random.Random) -> float:
    low, high = EFFICIENCY[cls]
    return rng.uniform(low, high)


@dataclass(frozen=True, slots=True)
class Copy:
    key: str
    demand: float  # bytes/s it reaches alone; math.inf: only its resources bound it
    resources: tuple[str, ...]


def fair_share(copies: Sequence[Copy], capacity: Mapping[str, float]) -> dict[str, float]:
    """Max-min fair rates (bytes/s) of concurrent copies. A resource missing from ``capacity``
    does not bound; a copy bound by nothing gets ``math.inf``."""
    rate = {c.key: 0.0 for c in copies}
    active = {c.key: c for c in copies}
    left = {r: capacity[r] for c in copies for r in c.resources if r in capacity}
    while active:
        users: dict[str, int] = {}
        for c in active.values():
            for r in c.resources:
                if r in left:
                    users[r] = users.get(r, 0) + 1
        step = min(
            [left[r] / n for r, n in users.items()]
            + [c.demand - rate[c.key] for c in active.values()]
        )
        if math.isinf(step):
            for k in active:
                rate[k] = math.inf
            break
        step = max(step, 0.0)
        for c in active.values():
            rate[c.key] += step
        for r, n in users.items():
            left[r] -= step * n
        full = {r for r, v in left.items() if v <= 1e-9 * max(capacity[r], 1.0)}
        for k, c in list(active.items()):
            if rate[k] >= c.demand * (1 - 1e-12) or any(r in full for r in c.resources):
                del active[k]
    return rate


# --- learning ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Observation:
    """One completed copy: bytes over seconds, the mean number of copies sharing its volumes
    while it ran (1: alone), and the probe rate the precheck measured (bytes/s, if any)."""

    source: str
    destination: str
    odx: bool
    bytes: int
    seconds: float
    concurrent: float = 1.0
    probe_rate: float | None = None

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds

    def standalone_rate(self, ceiling: float = math.inf) -> float:
        """The rate it would have had alone: with ``k`` copies splitting a resource it got about
        ``1/k`` of it (fair sharing), never more than ``ceiling`` (what its resources allow)."""
        return min(self.rate * max(self.concurrent, 1.0), max(ceiling, self.rate))


@dataclass(frozen=True, slots=True)
class Estimate:
    """A copy's rate alone, as two points of its distribution (bytes/s): ``p90`` is the rate
    nine copies in ten reach at least, so ``p90 <= p50``; ``source`` says what it rests on."""

    p50: float
    p90: float
    source: str  # "pair" | "class" | "probe"


def points(values: Sequence[float]) -> tuple[float, float]:
    """(P50, P90) of rates: the median, and the rate nine in ten reach at least."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    if len(ordered) >= 10:
        # the 'exclusive' estimate (position 0.1 x (n + 1)): a new copy falls below the k-th
        # slowest of n with chance k / (n + 1), so it covers nine in ten on average; the
        # 'inclusive' one (position 1 + 0.1 x (n - 1)) is the 2nd slowest of 11, which a new
        # copy falls below one time in six: P90 finishes were P83s
        tail = statistics.quantiles(ordered, n=10, method="exclusive")[0]
    else:  # few samples: the slowest seen, and never less pessimistic than 0.8 of the median
        tail = min(ordered[0], 0.8 * median)
    return median, min(tail, median)


class Learner:
    """Standalone-rate estimates per volume pair and per class, from past copies. Copies that
    ran alone are measured; copies that shared their volumes are corrected by the sharing rule,
    which can overshoot a copy its own demand held back, so a pair's estimate rests on the copies
    that ran alone whenever it has enough of them."""

    def __init__(
        self,
        observations: Iterable[Observation],
        volumes: Mapping[str, float] | None = None,
    ) -> None:
        """``volumes``: volume key -> its bandwidth as known tonight. A class ratio is taken
        over the same nominal rate it is applied to (``NightModel.nominal``: the slower of the
        destination's probe and the source), so a copy from a slow source is not counted slow
        twice: once in its ratio, again in the next move's nominal. A host copy's rate alone is
        at most its slower volume's bandwidth: the concurrency correction (observed rate times
        the copies that shared its volumes) overshoots a copy that one busy volume held back
        while the other had room, and a pair estimate that fast overran its P90."""
        volumes = volumes or {}
        self.alone: dict[tuple[str, str, bool], list[float]] = {}
        self.shared: dict[tuple[str, str, bool], list[float]] = {}
        self.ratios: dict[CopyClass, list[float]] = {}
        # a copy that shared its volumes ran at most as fast as it would have alone: its
        # observed rate over the probe is a ratio that errs on the slow side (the concurrency
        # correction could err on the fast side: a host copy on an ODX copy's volumes does not
        # slow it), used only while a class has too few copies that ran alone
        self.shared_ratios: dict[CopyClass, list[float]] = {}
        for o in observations:
            if o.bytes <= 0 or o.seconds <= 0:
                continue
            key = (o.source, o.destination, o.odx)
            clean = o.concurrent <= 1.0 + 1e-6
            ceiling = math.inf
            if not o.odx:
                ends = (volumes.get(o.source, math.inf), volumes.get(o.destination, math.inf))
                ceiling = min(*ends, o.probe_rate or math.inf)
            alone = o.standalone_rate(ceiling)
            (self.alone if clean else self.shared).setdefault(key, []).append(alone)
            if o.probe_rate:
                nominal = min(o.probe_rate, volumes.get(o.source, math.inf))
                ratios = self.ratios if clean else self.shared_ratios
                ratios.setdefault(copy_class(o.odx), []).append(o.rate / nominal)

    def class_ratios(self, cls: CopyClass) -> list[float]:
        """Observed rate over probe of the class's copies: those that ran alone, topped up with
        the shared ones (uncorrected, so slow-side) while those alone are too few."""
        alone = self.ratios.get(cls, [])
        return alone if len(alone) >= PAIR_MIN_MOVES else alone + self.shared_ratios.get(cls, [])

    def pair(self, source: str, destination: str, odx: bool) -> list[float]:
        key = (source, destination, odx)
        alone = self.alone.get(key, [])
        return alone if len(alone) >= PAIR_MIN_MOVES else alone + self.shared.get(key, [])

    def estimate(
        self, source: str, destination: str, odx: bool, probe_rate: float | None, fallback: float
    ) -> Estimate:
        """The pair's own history if it has enough moves; else the class's ratio to the probe
        applied to this move's probe; else the probe (or ``fallback``) with a pessimistic tail."""
        pair = self.pair(source, destination, odx)
        if len(pair) >= PAIR_MIN_MOVES:
            p50, p90 = points(pair)
            return Estimate(p50, p90, "pair")
        ratios = self.class_ratios(copy_class(odx))
        if probe_rate and len(ratios) >= PAIR_MIN_MOVES:
            r50, r90 = points(ratios)
            return Estimate(probe_rate * r50, probe_rate * r90, "class")
        base = probe_rate or fallback
        return Estimate(base, base * 0.7, "probe")
