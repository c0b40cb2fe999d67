"""When a copy's progress is worth an event: at each 10 % step and otherwise at most once a
minute, and only when the percentage moved, so that silence means a stuck copy (the automation
'hvmove: move silent' waits for these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProgressGate:
    every_s: float = 60.0
    step_percent: int = 10
    _last_t: float | None = None
    _last_percent: int = -1

    def due(self, percent: int, now: float) -> bool:
        """True when PERCENT at time NOW (monotonic seconds) should be sent; records it."""
        if percent == self._last_percent:
            return False
        first = self._last_t is None
        crossed = percent // self.step_percent > self._last_percent // self.step_percent
        if first or crossed or percent >= 100 or now - (self._last_t or 0.0) >= self.every_s:
            self._last_t, self._last_percent = now, percent
            return True
        return False
