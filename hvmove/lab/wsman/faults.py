"""Transport faults to inject at the lab endpoint (dropped connections, lost replies, HTTP and
WS-Management faults, slow replies), matched in order and consumed as they fire."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = frozenset({"drop", "drop_after", "close_after", "status", "wsmanfault", "delay"})
FAULT_ACTIONS = frozenset({"Create", "Command", "Send", "Receive", "Signal", "Delete", "Get", "*"})


@dataclass
class _Fault:
    action: str
    kind: str
    host: str | None
    code: int | None
    seconds: float
    times: int


class FaultQueue:
    """Faults to inject, matched in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Fault] = []

    def add(
        self,
        *,
        action: str,
        kind: str,
        host: str | None = None,
        code: int | None = None,
        seconds: float = 0.0,
        times: int = 1,
    ) -> None:
        # Validate here: a typo would otherwise be a fault that silently never fires.
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(FAULT_ACTIONS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind in ("status", "wsmanfault") and code is None:
            raise ValueError(f"fault kind {kind!r} needs a code")
        if kind == "status" and code is not None and not 400 <= code <= 599:
            raise ValueError(f"HTTP status {code} is not an error status")
        if times < 1:
            raise ValueError("times must be at least 1")
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            self._entries.append(_Fault(action, kind, host, code, float(seconds), int(times)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The entries not yet consumed, for a control handler to report."""
        with self._lock:
            return [dict(vars(e)) for e in self._entries]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _take(self, host: str, action: str) -> _Fault | None:
        with self._lock:
            for entry in self._entries:
                if entry.action not in ("*", action) or entry.host not in (None, host):
                    continue
                entry.times -= 1
                if entry.times <= 0:
                    self._entries.remove(entry)
                return entry
        return None
