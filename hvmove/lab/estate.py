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
from typing import Any, Literal

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
    # minifilters attached to this volume -> SprtFtrs, as `fltmc instances -v <volume>` lists
    # them; ODX needs bits 0x1 and 0x2 of every filter attached to either volume ("Deploy
    # Windows Offloaded Data Transfers", technet jj200627). Empty: every filter opts in.
    filters: dict[str, int] = {}
    # Get-Volume -FilePath on this volume fails with this message (a storage provider error);
    # the file system is then unknown to the scripts
    get_volume_error: str = ""


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
    # health not OK (e.g. its storage is low on space): Hyper-V reports the state as
    # <State>Critical (RunningCritical, OffCritical, ...), msvm-computersystem HealthState 20/25
    critical: bool = False
    # busy with another operation (a backup, a checkpoint merge): Hyper-V refuses to move it
    busy: str | None = None
    # what the heartbeat integration service reports; None: "OkApplicationsUnknown" while running.
    # "NoContact" for a guest without integration services, "Disabled" when the service is off.
    heartbeat: str | None = None
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
    # What `hvmove doctor` reads (issue 11); each can be set to a broken prerequisite.
    # rights of the lab account: "admin" (local Administrators), "hyperv_admins" (Hyper-V
    # Administrators, S-1-5-32-578), "none" (Hyper-V refuses every cmdlet)
    rights: Literal["admin", "hyperv_admins", "none"] = "admin"
    # WinRM quotas as `winrm get winrm/config` shows them; defaults: MaxShellsPerUser 30
    # (https://learn.microsoft.com/windows/win32/winrm/quotas), MaxConcurrentOperationsPerUser
    # 1500 and IdleTimeout 7200000 ms (winrm/config dumps quoted in reference/hyperv.md section 7)
    winrm_max_shells_per_user: int = 30
    winrm_max_concurrent_operations_per_user: int = 1500
    winrm_idle_timeout_ms: int = 7_200_000
    # the DNS name the host's HTTPS certificate is issued for; None: the lab certificate
    # (IP:127.0.0.1, DNS:localhost). Another name is the "wrong certificate name" fault.
    tls_name: str | None = None
    ps_version: str = "5.1.20348.2849"
    hyperv_module: str | None = "2.0.0.0"  # None: the Hyper-V PowerShell module is not installed
    ui_culture: str = "en-US"
    clock_offset_s: float = 0.0  # the host's clock minus the real one
    # script -> {field: value}: this host prints that value in that field, a contract mismatch
    # for `hvmove doctor` to catch (a top-level field of the script's document)
    contract_faults: dict[str, dict[str, Any]] = {}
    # Msvm_VirtualSystemMigrationSettingData has AvoidRemovingVHDs ("added in Windows 10 1703 and
    # Windows Server 2016"): the storage migration can keep every source copy
    avoid_removing_vhds: bool = True


class LabPremises(BaseModel):
    """What hvmove assumes about Windows but no document settles (`hvmove canary` observes each on
    a real host). The defaults are the lab's usual answer; each can be flipped so that both
    answers are handled and reported."""

    # the migration job goes on after the WinRM shell that started it is closed
    # (reference/hyperv.md section 2.1: "most likely continues [UNVERIFIED]")
    jobs_survive_session_close: bool = True
    # Test-VHD gives a usable answer for a disk that is attached (hyperv.md section 10, item 8)
    test_vhd_attached_ok: bool = True
    # Get-VHD -Path takes '[' and ']' literally, as its documentation says ("Accept wildcard
    # characters: False"); False: it resolves them as a wildcard pattern, as the decompiled
    # cmdlet suggests (review windows-scripts.md finding 5)
    literal_paths: bool = True
    # the WMI migration with AvoidRemovingVHDs keeps every source VHD at the switch, as
    # documented (msvm-virtualsystemmigrationsettingdata); False: the flag is ignored
    avoid_removing_vhds_honoured: bool = True
    # Move-VMStorage removes the moved disks' source at the switch, as documented
    # (move-vmstorage); False: it keeps them (what the lab did before issue 10)
    move_vmstorage_removes_source: bool = True
    # every mode: a differencing disk's parent that the request does not name (in mode all: that
    # no drive or checkpoint attaches, a golden image) stays where it is (the child's copy points
    # at it there). Move-VMStorage's -Vhds lists "each individual virtual hard disk to be moved",
    # -DestinationStoragePath names no parents; where such a parent goes is not documented
    # (learn.microsoft.com/powershell/module/hyper-v/move-vmstorage). True: it is copied beside
    # its child (the source copy stays, as without -RemoveSourceUnmanagedVhds); hvmove's
    # prechecks count it either way
    unnamed_parents_move_with_child: bool = False


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
    premises: LabPremises = LabPremises()
    # The project scripts' own refusals, modelled by the lab: a second move of a VM that is moving
    # (Start-StorageMove answers already_running) and deleting a file a VM references
    # (Remove-StorageFiles, Find-PathReferences). Off, the lab starts and deletes anyway, so that
    # tests prove hvmove's own guards rather than the scripts'.
    script_refusals: bool = True


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
