"""The lab estate's bandwidth as concurrent copies share it: ``hvmove.throughput``'s model (read
its docstring for what is documented Windows and what is a model assumption) turned into waits.

Every copy (a storage move or a bandwidth probe) is a flow; whenever flows come or go, or a volume's
bandwidth or the lab's ``rate_scale`` changes, the max-min fair rates are recomputed for all of
them. A flow's thread asks ``take(n)`` before moving ``n`` more logical bytes and waits until its
rate, integrated over time, has earned them: the copy advances as a fluid at its current share.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from hvmove import throughput
from hvmove.lab.estate import Estate, LabVolume

MAX_WAIT_S = 0.25  # re-check at least this often: rates change when other copies start or end


def volume_id(vol: LabVolume) -> str:
    return vol.root.lower() + "|" + vol.dir


def odx_array(src: LabVolume, dst: LabVolume) -> str | None:
    """The array that offloads this copy: both volumes ODX-capable on the same array
    (hyperv.md §5.4: "if the filter driver supports ODX but the storage does not (or vice versa),
    ODX will not be used" [ODX-ASK]; cross-array only through one copy manager [ODX-DEP])."""
    if src.odx and dst.odx and src.array and src.array == dst.array:
        return src.array
    return None


@dataclass(slots=True)
class _Flow:
    src: LabVolume
    dst: LabVolume
    odx: str | None
    efficiency: float
    rate: float = 0.0
    earned: float = 0.0  # logical bytes its rate has paid for so far
    spent: float = 0.0  # logical bytes it has taken
    began: float = 0.0  # monotonic instant of its first bytes (when it starts earning)


class Fabric:
    def __init__(self, estate: Estate) -> None:
        self.estate = estate
        self.cond = threading.Condition()
        self.flows: dict[str, _Flow] = {}
        self.last = time.monotonic()
        self.signature: tuple[float, ...] = ()

    # -- capacities, from the estate as it is now -----------------------------------------------
    def capacity(self) -> dict[str, float]:
        """Bytes/s per resource: every volume; an array's offload engine (ODX copies inside it
        share it: the ODX speedup times its fastest volume); an array's host-copy bandwidth
        only where ``array_mbps`` declares it (else its volumes are the limit)."""
        est = self.estate
        caps: dict[str, float] = {}
        fastest: dict[str, float] = {}
        for vol in est.data.volumes:
            caps[throughput.volume_resource(volume_id(vol))] = est.bandwidth(vol)
            if vol.array:
                fastest[vol.array] = max(fastest.get(vol.array, 0.0), est.bandwidth(vol))
        for array, bw in fastest.items():
            caps[throughput.offload_resource(array)] = bw * est.settings.odx_speedup
            declared = est.settings.array_mbps.get(array)
            if declared is not None:
                caps[throughput.array_resource(array)] = declared * 1e6 * est.settings.rate_scale
        return caps

    def _sig(self) -> tuple[float, ...]:
        s = self.estate.settings
        return (
            s.rate_scale,
            s.odx_speedup,
            *s.array_mbps.values(),
            *(v.bandwidth_mbps for v in self.estate.data.volumes),
        )

    def copies(self, caps: dict[str, float]) -> list[throughput.Copy]:
        """The open flows as the model sees them: demand (rate alone) and resources."""
        out = []
        for key, f in self.flows.items():
            arrays = {volume_id(v): v.array for v in (f.src, f.dst)}
            res = throughput.copy_resources(
                volume_id(f.src), volume_id(f.dst), odx_array=f.odx, arrays=arrays
            )
            nominal = min(caps[throughput.volume_resource(volume_id(v))] for v in (f.src, f.dst))
            if f.odx:
                nominal *= self.estate.settings.odx_speedup
            out.append(throughput.Copy(key, nominal * f.efficiency, res))
        return out

    # -- the fluid --------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = time.monotonic()
        dt, self.last = now - self.last, now
        for f in self.flows.values():
            if not math.isinf(f.rate):
                f.earned += f.rate * dt
        sig = self._sig()
        if sig != self.signature:
            self._reshare(sig)

    def _reshare(self, sig: tuple[float, ...] | None = None) -> None:
        self.signature = sig or self._sig()
        caps = self.capacity()
        rates = throughput.fair_share(self.copies(caps), caps)
        for key, f in self.flows.items():
            # a zero bandwidth means the lab does not throttle (rate_scale 0)
            f.rate = rates[key] if rates[key] > 0 else math.inf
        self.cond.notify_all()

    def open(
        self,
        key: str,
        src: LabVolume,
        dst: LabVolume,
        efficiency: float = 1.0,
        *,
        offload: bool = True,
    ) -> None:
        """A flow from ``src`` to ``dst`` (a probe: the same volume, ``offload=False``)."""
        with self.cond:
            self._advance()
            odx = odx_array(src, dst) if offload else None
            self.flows[key] = _Flow(src, dst, odx, efficiency)
            self._reshare()

    def close(self, key: str) -> None:
        with self.cond:
            self._advance()
            if self.flows.pop(key, None) is not None:
                self._reshare()

    def take(self, key: str, logical_bytes: float) -> None:
        """Wait until the flow's share has paid for ``logical_bytes`` more."""
        with self.cond:
            f = self.flows[key]
            if f.spent == 0:  # no credit for the time between opening and the first bytes
                self._advance()
                f.earned = 0.0
                f.began = self.last
            f.spent += logical_bytes
            while True:
                self._advance()
                if math.isinf(f.rate) or f.earned >= f.spent:
                    return
                wait = (f.spent - f.earned) / f.rate if f.rate > 0 else MAX_WAIT_S
                self.cond.wait(min(wait, MAX_WAIT_S))

    def rate(self, key: str) -> float:
        with self.cond:
            return self.flows[key].rate

    def began(self, key: str) -> float:
        with self.cond:
            return self.flows[key].began

    def paid_at(self, key: str) -> float:
        """The monotonic instant the fluid had paid for every byte the flow has taken: now, less
        the credit it has earned beyond them (a thread that wakes late, or whose real I/O is
        slow, has kept earning at its share). An unthrottled flow: now."""
        with self.cond:
            self._advance()
            f = self.flows[key]
            if math.isinf(f.rate) or f.rate <= 0:
                return self.last
            return self.last - max(f.earned - f.spent, 0.0) / f.rate


def efficiency(estate: Estate, vm_id: str, src: LabVolume, dst: LabVolume, attempt: int) -> float:
    """This copy's efficiency (its rate alone over the nominal rate): 1 unless the lab draws
    them (``efficiency_seed``), then from ``hvmove.throughput.EFFICIENCY`` per class, the same
    for the same VM, attempt and seed, so two runs over one estate meet the same copies."""
    seed = estate.settings.efficiency_seed
    if seed is None:
        return 1.0
    rng = random.Random(f"{seed}:{vm_id.lower()}:{attempt}")
    return throughput.draw_efficiency(throughput.copy_class(odx_array(src, dst) is not None), rng)
