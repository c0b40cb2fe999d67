"""One host as the prechecks of a whole batch see it: read up front in a few calls, asked per VM.

Prechecking one move takes seven script calls (host facts, the VM, its move status, volumes,
destination files, ODX, a bandwidth probe). For hundreds of moves per host that is thousands of
round trips, and the orchestrator's CPU goes into pypsrp's per-call work, not into the checks.
``HostSnapshot`` reads the same facts for every move of the batch at once (Get-HostFacts,
Get-PrecheckFacts for the VMs, Get-VolumeInfo and Get-VHDFacts for the paths, each for up to 50
VMs or 100 paths a call, one Get-OdxStatus per pair of volumes, one Measure-Bandwidth per
destination volume) and then
answers the precheck's calls with the signatures of ``HostClient``, so the per-VM precheck logic
runs unchanged.

What the batch did not read cleanly is asked of the host at the moment the precheck asks: an
entry with an error (a VM not found, a path the host cannot resolve), a batch call that failed,
a path outside the batch. A per-VM error is therefore exactly what that VM's own precheck would
meet, never hidden by the batch and never spread to the other VMs. A snapshot lives for one batch
run only: the next run reads the host again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from hvmove import models
from hvmove.hyperv.client import HostClient, checked_volumes
from hvmove.hyperv.errors import AuthenticationFailed, HostError, HostUnreachable, TlsError
from hvmove.paths import volume_key

T = TypeVar("T")


# A call reads at most this many VMs or paths: on a host each VM (Get-VHD of every chain) and each
# path (Get-Volume) takes real time, and a call must end well inside its script's deadline
# (catalog: Get-PrecheckFacts 300 s, Get-VolumeInfo 60 s). The fixed cost of a call (about 4 ms
# of hvmove's CPU) spread over 50 or 100 entries stays small.
VMS_PER_CALL = 50
PATHS_PER_CALL = 100


def _lower(path: str) -> str:
    return path.lower()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class SharedProbes:
    """The batch's probes of volumes several hosts see (CSVs, SMB shares), one at a time and
    each volume once. Probed by every host at once, a volume measured its bandwidth split
    between the probes (an SMB share seen by six hosts gave 0.17 of its bandwidth to each, a CSV
    probed by two nodes 0.5) and the night planned every copy to it that much slower; probes of
    different volumes on one array share the array too. A probe that failed is not shared: each
    host then probes for itself and reports its own reason (a share it may not write to)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)  # one probe at a time
    _found: dict[tuple[str, int], models.BandwidthProbe] = field(default_factory=dict)

    def measure(
        self, key: tuple[str, int], probe: Callable[[], models.BandwidthProbe | None]
    ) -> models.BandwidthProbe | None:
        with self._lock:
            if key not in self._found:
                found = probe()
                if found is None:
                    return None
                self._found[key] = found
            return self._found[key]


class HostSnapshot:
    def __init__(self, client: HostClient, shared: SharedProbes | None = None) -> None:
        self.client = client
        self._shared = shared
        self._facts: models.HostFacts | None = None
        self._vms: dict[str, models.PrecheckFactsEntry] = {}  # clean entries, by lower-case id
        self._volumes: dict[str, models.VolumeInfo] = {}  # every entry, by the exact path asked
        self._vhds: dict[str, models.VhdCheck] = {}
        self._odx: dict[tuple[str, str], models.OdxStatus] = {}  # by (source, dest) volume roots
        self._probes: dict[tuple[str, int], models.BandwidthProbe] = {}  # by (volume root, MiB)
        self.batch_calls: Counter[str] = Counter()  # what the batch read, for tests and reports
        self.live_calls: Counter[str] = Counter()  # what a precheck still had to ask the host
        self._unreachable = False

    @property
    def name(self) -> str:
        return self.client.name

    # -- reading up front --------------------------------------------------------------------
    def _batch(self, script: str, read: Callable[[], T]) -> T | None:
        """One batch read; a failure leaves its facts unread, so each precheck asks itself.
        A host that cannot be reached or refuses the logon is not asked again by the batch: the
        first precheck meets the same error at once, as it did without a batch."""
        if self._unreachable:
            return None
        self.batch_calls[script] += 1
        try:
            return read()
        except (HostUnreachable, AuthenticationFailed, TlsError):
            self._unreachable = True
            return None
        except HostError:
            return None

    def read_vms(self, vm_ids: list[str]) -> dict[str, models.VMInfo]:
        """Host facts and the VMs; returns the VMs read cleanly, by lower-case asked id."""
        self._facts = self._batch("Get-HostFacts", self.client.host_facts)
        for ids in _chunks(list(dict.fromkeys(vm_ids)), VMS_PER_CALL):
            facts = self._batch(
                "Get-PrecheckFacts", lambda ids=ids: self.client.precheck_facts(ids)
            )
            for entry in facts.vms if facts is not None else []:
                if not entry.error and entry.vm is not None and entry.move is not None:
                    self._vms[entry.vm_id.lower()] = entry
                    self._vms.setdefault(entry.vm.id.lower(), entry)
        return {k: e.vm for k, e in self._vms.items() if e.vm is not None}

    def read_paths(self, volume_paths: Iterable[str], vhd_paths: Iterable[str]) -> None:
        """Get-VolumeInfo for every path and Get-VHDFacts for every destination file
        (Get-VHDFacts only for files on volumes the host resolved: a path outside every volume
        would fail the whole call)."""
        for paths in _chunks(list(dict.fromkeys(volume_paths)), PATHS_PER_CALL):
            report = self._batch(
                "Get-VolumeInfo", lambda p=paths: self.client.volumes(p, partial=True)
            )
            for v in report.volumes if report is not None else []:
                self._volumes[v.path] = v
        files = [p for p in dict.fromkeys(vhd_paths) if self._resolved(p)]
        for chunk in _chunks(files, PATHS_PER_CALL):
            found = self._batch("Get-VHDFacts", lambda c=chunk: self.client.vhd_facts(c))
            for d in found.disks if found is not None else []:
                self._vhds[d.path] = d

    def read_odx(self, pairs: Iterable[tuple[str, str]]) -> None:
        """One Get-OdxStatus per pair of volumes: its answer depends on the two volumes only
        (the OS switch, their file systems, their filters, their arrays)."""
        for source, dest in pairs:
            key = self._pair(source, dest)
            if key is None or key in self._odx:
                continue
            found = self._batch("Get-OdxStatus", lambda s=source, d=dest: self.client.odx(s, d))
            if found is not None:
                self._odx[key] = found

    def probe(self, folders: Iterable[tuple[str, int]]) -> None:
        """One Measure-Bandwidth per destination volume and probe size: it measures the volume.
        A probe that fails is not shared: each move then probes its own folder and reports its
        own reason (a share this host may not write to, a full volume)."""
        for folder, size_mib in folders:
            root = self._root(folder)
            if root is None or (root, size_mib) in self._probes:
                continue

            def read(f: str = folder, n: int = size_mib) -> models.BandwidthProbe | None:
                return self._batch("Measure-Bandwidth", lambda: self.client.bandwidth(f, n))

            key = self._shared_key(folder)
            if key is not None and self._shared is not None:
                found = self._shared.measure((key, size_mib), read)
            else:
                found = read()
            if found is not None:
                self._probes[(root, size_mib)] = found

    def _shared_key(self, folder: str) -> str | None:
        """The estate-wide name of a volume other hosts may probe too; None for a local one."""
        vol = self._volumes[folder]
        if vol.kind not in ("csv", "smb"):
            return None
        cluster = self._facts.cluster_name if self._facts else None
        if vol.kind == "csv" and not cluster:
            return None  # a CSV of an unknown cluster: its name alone is not unique
        return volume_key(vol.volume, kind=vol.kind, host=self.name, cluster=cluster)

    def _resolved(self, path: str) -> bool:
        v = self._volumes.get(path)
        return v is not None and not v.error

    def _root(self, path: str) -> str | None:
        return _lower(self._volumes[path].volume) if self._resolved(path) else None

    def _pair(self, source: str, dest: str) -> tuple[str, str] | None:
        s, d = self._root(source), self._root(dest)
        return (s, d) if s is not None and d is not None else None

    # -- what a precheck calls: HostClient's methods -----------------------------------------
    def _live(self, script: str) -> HostClient:
        self.live_calls[script] += 1
        return self.client

    def host_facts(self) -> models.HostFacts:
        return self._facts or self._live("Get-HostFacts").host_facts()

    def inventory(self, vm_id: str = "") -> models.Inventory:
        entry = self._vms.get(vm_id.lower()) if vm_id else None
        if entry is not None and entry.vm is not None:
            return models.Inventory(host=self.name.upper(), vms=[entry.vm])
        return self._live("Get-VMInventory").inventory(vm_id)

    def move_status(self, vm_id: str) -> models.MoveStatus:
        entry = self._vms.get(vm_id.lower())
        if entry is not None and entry.move is not None:
            return entry.move
        return self._live("Get-StorageMoveStatus").move_status(vm_id)

    def volumes(self, paths: list[str], *, partial: bool = False) -> models.VolumeReport:
        if paths and all(p in self._volumes for p in paths):
            report = models.VolumeReport(volumes=[self._volumes[p] for p in paths])
            return checked_volumes(self.name, report, partial)
        return self._live("Get-VolumeInfo").volumes(paths, partial=partial)

    def vhd_facts(self, paths: list[str]) -> models.VhdReport:
        if all(p in self._vhds for p in paths):
            return models.VhdReport(disks=[self._vhds[p] for p in paths])
        return self._live("Get-VHDFacts").vhd_facts(paths)

    def odx(self, source: str, destination: str) -> models.OdxStatus:
        key = self._pair(source, destination)
        if key is not None and key in self._odx:
            return self._odx[key]
        return self._live("Get-OdxStatus").odx(source, destination)

    def bandwidth(self, destination: str, size_mib: int) -> models.BandwidthProbe:
        root = self._root(destination)
        if root is not None and (root, size_mib) in self._probes:
            return self._probes[(root, size_mib)]
        return self._live("Measure-Bandwidth").bandwidth(destination, size_mib)
