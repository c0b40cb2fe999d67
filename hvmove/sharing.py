"""Bandwidth the planner hands out to the moves of a night, so that sharing never makes a move
late.

Concurrent copies split their volumes' and arrays' bandwidth (``hvmove.throughput``: max-min
fair). Under that rule a copy that is not held back by its own demand gets at least
``capacity / users`` of its bottleneck resource, so it never runs slower than

    min(its own rate alone, min over its resources of capacity / users)

whatever the other copies do. The planner therefore gives each move a *planned rate* when it
admits it, and keeps this invariant for every resource at every instant:

    users x (the highest planned rate among them) <= capacity

A move is admitted at a rate every resource can give to one more user without taking anything
from the moves already planned there; its P90 finish is then ``bytes / planned rate`` and stays
true while the others come and go. A move alone does not grab a whole resource it cannot fill: it
is planned at ``capacity / k`` where ``k`` copies at its own P90 rate fill the resource, which
leaves room for the next ones; near the window end the full free share is tried as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Shares:
    capacity: Mapping[str, float]  # bytes/s; a resource not listed bounds nothing
    users: dict[str, list[float]] = field(default_factory=dict)  # resource -> planned rates

    def bounded(self, resources: Sequence[str]) -> list[str]:
        return [r for r in resources if self.capacity.get(r, math.inf) < math.inf]

    def alone(self, resources: Sequence[str], demand: float) -> float:
        """The rate with every resource to itself: what no schedule can beat."""
        return min([demand] + [self.capacity[r] for r in self.bounded(resources)])

    def offer(
        self, resources: Sequence[str], demand: float, *, greedy: bool = False
    ) -> float | None:
        """The rate a new copy with P90 rate ``demand`` may be planned at now, or None when one
        more user would take bandwidth from a copy already planned on one of its resources."""
        rate = demand
        for r in self.bounded(resources):
            cap, rates = self.capacity[r], self.users.get(r, [])
            n = len(rates) + 1
            if rates and max(rates) * n > cap * (1 + 1e-9):
                return None
            fill = n if greedy else max(n, math.ceil(cap / demand - 1e-9))
            rate = min(rate, cap / fill)
        return rate

    def fits(self, resources: Sequence[str], rate: float) -> bool:
        """Whether a copy at ``rate`` can join now without breaking the invariant."""
        for r in self.bounded(resources):
            rates = self.users.get(r, [])
            if max([rate, *rates]) * (len(rates) + 1) > self.capacity[r] * (1 + 1e-9):
                return False
        return True

    def add(self, resources: Sequence[str], rate: float) -> None:
        for r in self.bounded(resources):
            self.users.setdefault(r, []).append(rate)

    def remove(self, resources: Sequence[str], rate: float) -> None:
        for r in self.bounded(resources):
            self.users[r].remove(rate)
