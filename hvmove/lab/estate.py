"""The lab estate: hosts, volumes and VMs, kept in ``estate.json`` in the lab folder.

Windows paths (``D:\\VMs\\web01\\disk.vhdx``, ``\\\\fs01\\vmstore\\...``) map to real files under
the lab folder through the volume table. Disk metadata lives in the disk files themselves (see
``vhd.py``), so Get-VHD reads what is really on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path, PureWindowsPath
from typing import Literal

from pydantic import BaseModel, Field


class LabVolume(BaseModel):
    root: str  # 'D:\', 'C:\ClusterStorage\Volume1\', '\\fs01\vmstore\'
    dir: str  # folder under the lab dir, relative
    kind: str = "local"  # local | csv | smb
    hosts: list[str]  # hosts that see this volume
    capacity: int  # logical bytes
    bandwidth_mbps: float = 400.0  # logical MB/s for reads and writes on this volume
    file_system: str = "NTFS"
    label: str = ""
    array: str | None = None  # storage array; ODX works between volumes of one ODX array
    odx: bool = False


class LabDrive(BaseModel):
    controller_type: str = "SCSI"
    controller_number: int = 0
    controller_location: int = 0
    path: str | None = None  # Windows path of the attached file; None for pass-through
    disk_number: int | None = None
    shared: bool = False


class LabCheckpoint(BaseModel):
    id: str
    name: str
    parent_id: str | None = None
    created: str
    disk_paths: list[str] = []  # the disk files this checkpoint holds (parents in a chain)


class LabVM(BaseModel):
    id: str
    name: str
    host: str
    state: str = "Off"
    configuration_location: str
    snapshot_file_location: str
    smart_paging_file_path: str
    drives: list[LabDrive] = []
    checkpoints: list[LabCheckpoint] = []
    dvd_paths: list[str] = []
    replication_state: str = "Disabled"
    guest_interval_s: float = 0.05  # a running guest writes one block this often

    def config_file(self) -> str:
        return str(
            PureWindowsPath(self.configuration_location, "Virtual Machines", f"{self.id}.vmcx")
        )


class LabHost(BaseModel):
    name: str
    port: int = 0
    os_version: str = "10.0.20348"
    os_caption: str = "Microsoft Windows Server 2022 Datacenter"
    maximum_storage_migrations: int = 2
    virtual_hard_disk_path: str = "D:\\Hyper-V\\Virtual Hard Disks"
    virtual_machine_path: str = "D:\\Hyper-V"
    cluster_name: str | None = None
    odx_os_enabled: bool = True
    # Kerberos delegation of this host to the file servers (KCD to cifs, or RBCD): without it a
    # remote session, and VMMS acting for it, are refused on SMB paths (the double hop)
    smb_delegation: bool = True


class LabSettings(BaseModel):
    size_scale: int = 4096  # logical bytes per real byte
    rate_scale: float = 1.0  # multiplies every volume's bandwidth; 0 turns throttling off
    odx_speedup: float = 8.0  # how much faster a copy inside one ODX array is
    # storage arrays' own bandwidth for host copies (logical MB/s, before rate_scale), shared by
    # every copy on their volumes; an array not listed leaves that to its volumes (ODX copies
    # share the array's offload engine either way: hvmove.lab.bandwidth)
    array_mbps: dict[str, float] = {}
    # None: every copy reaches its nominal rate; a seed: each copy's efficiency is drawn from
    # hvmove.throughput.EFFICIENCY (a model assumption, see there), reproducibly per VM
    efficiency_seed: int | None = None
    job_retention_s: float = 300.0  # Msvm_MigrationJob TimeBeforeRemoval
    guests: bool = True  # running VMs' guest writers (off for estates of thousands of VMs)
    username: str = "labadmin"
    https: bool = True
    # how hvmove.yaml logs on: "negotiate" (NTLM here, the production default; message
    # encryption over HTTP) or "basic"; the listener accepts both
    auth: Literal["negotiate", "basic"] = "negotiate"


class EstateData(BaseModel):
    settings: LabSettings = LabSettings()
    hosts: list[LabHost] = []
    volumes: list[LabVolume] = []
    vms: list[LabVM] = []
    transport_faults: list[dict] = Field(default_factory=list)


def norm(path: str) -> str:
    """Case-insensitive comparison key for a Windows path (no trailing backslash)."""
    return path.replace("/", "\\").rstrip("\\").lower()


def is_absolute_windows(path: str) -> bool:
    p = PureWindowsPath(path)
    return bool(p.drive) and (p.root == "\\" or path.startswith("\\\\"))


class PathError(ValueError):
    pass


def ntlm_domain(lab_dir: Path) -> str:
    """The lab account's domain: fixed per lab folder, distinct between labs of one process."""
    import hashlib

    return "LAB" + hashlib.sha1(str(lab_dir.resolve()).encode()).hexdigest()[:6].upper()


class Estate:
    """The estate in memory plus its file; every mutation is saved atomically."""

    def __init__(self, lab_dir: Path, data: EstateData) -> None:
        self.dir = lab_dir
        self.data = data
        self.lock = threading.RLock()

    @classmethod
    def load(cls, lab_dir: Path) -> Estate:
        raw = json.loads((lab_dir / "estate.json").read_text(encoding="utf-8"))
        estate = cls(lab_dir, EstateData.model_validate(raw))
        for vol in estate.data.volumes:  # a volume's root exists even when nothing is on it
            (lab_dir / vol.dir).mkdir(parents=True, exist_ok=True)
        return estate

    def save(self) -> None:
        with self.lock:
            tmp = self.dir / "estate.json.tmp"
            tmp.write_text(self.data.model_dump_json(indent=1), encoding="utf-8")
            os.replace(tmp, self.dir / "estate.json")

    @property
    def settings(self) -> LabSettings:
        return self.data.settings

    # -- lookups ---------------------------------------------------------------------------------
    def host(self, name: str) -> LabHost:
        for h in self.data.hosts:
            if h.name.lower() == name.lower():
                return h
        raise KeyError(name)

    def vms_on(self, host: str) -> list[LabVM]:
        return [vm for vm in self.data.vms if vm.host.lower() == host.lower()]

    def vm(self, host: str, vm_id: str) -> LabVM | None:
        for vm in self.vms_on(host):
            if vm.id.lower() == vm_id.strip("{}").lower():
                return vm
        return None

    def volume_of(self, host: str, path: str) -> LabVolume:
        """The volume a host sees that holds a Windows path; PathError when there is none."""
        if not is_absolute_windows(path):
            raise PathError(f"Cannot find path '{path}': not an absolute path")
        key = norm(path) + "\\"
        best: LabVolume | None = None
        for vol in self.data.volumes:
            if host.lower() not in (h.lower() for h in vol.hosts):
                continue
            root = norm(vol.root) + "\\"
            if key.startswith(root) and (best is None or len(root) > len(norm(best.root))):
                best = vol
        if best is None:
            raise PathError(f"Cannot find path '{path}' because the drive or share does not exist")
        return best

    def local(self, host: str, path: str) -> Path:
        """The real file behind a Windows path as the given host sees it."""
        vol = self.volume_of(host, path)
        rest = norm(path)[len(norm(vol.root)) :].lstrip("\\")
        # keep the caller's case for the file name, but locate it case-insensitively
        original_rest = path.replace("/", "\\").rstrip("\\")[len(norm(vol.root)) :].lstrip("\\")
        base = self.dir / vol.dir
        if not rest:
            return base
        return _case_insensitive_join(base, original_rest.split("\\"))

    def used_bytes(self, vol: LabVolume) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.dir / vol.dir):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, f))
        return total * self.settings.size_scale

    def free_bytes(self, vol: LabVolume) -> int:
        return max(0, vol.capacity - self.used_bytes(vol))

    def bandwidth(self, vol: LabVolume) -> float:
        """Logical bytes per second, or 0 for unthrottled."""
        return vol.bandwidth_mbps * 1e6 * self.settings.rate_scale


def _case_insensitive_join(base: Path, parts: list[str]) -> Path:
    """Windows paths are case-insensitive: reuse an existing entry whatever its case."""
    current = base
    for part in parts:
        if not part:
            continue
        candidate = current / part
        if not candidate.exists() and current.is_dir():
            lowered = part.lower()
            for entry in os.listdir(current):
                if entry.lower() == lowered:
                    candidate = current / entry
                    break
        current = candidate
    return current
