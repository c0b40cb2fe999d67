"""Pydantic models at every boundary.

The JSON that each PowerShell script prints is parsed into these models, and the lab builds its
replies from the same models, so the contract lives in one place. JSON keys are the field names
(snake_case): the scripts build ``[pscustomobject]`` objects with exactly these keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    # Scripts may grow extra keys on newer hosts; unknown keys must not break an old orchestrator.
    model_config = ConfigDict(extra="ignore", frozen=False)


# Unknown = 0 in both enums (Microsoft.Vhd.PowerShell VhdFormat/VhdType): one odd disk must not
# invalidate a whole inventory
VhdFormat = Literal["VHD", "VHDX", "VHDSet", "Unknown"]
VhdType = Literal["Fixed", "Dynamic", "Differencing", "Unknown"]
VMStateName = Literal["Running", "Off", "Saved", "Paused", "Starting", "Stopping", "Other"]
JobStateName = Literal[
    "New",
    "Starting",
    "Running",
    "Suspended",
    "ShuttingDown",
    "Completed",
    "Terminated",
    "Killed",
    "Exception",
    "Unknown",
]
MoveMode = Literal["all", "components", "vhds"]
MovePath = Literal["wmi", "move-vmstorage"]
VolumeKind = Literal["local", "csv", "smb"]


# --- Get-HostFacts.ps1 ---------------------------------------------------------------------------
class HostFacts(Model):
    name: str
    os_version: str
    os_caption: str = ""
    maximum_storage_migrations: int
    virtual_hard_disk_path: str
    virtual_machine_path: str
    cluster_name: str | None = None
    # every node of the failover cluster, this one included; empty when not clustered
    cluster_nodes: list[str] = []
    running_storage_moves: int = 0
    # the WMI storage migration can keep every source copy (AvoidRemovingVHDs exists here)
    keep_source_supported: bool = False
    keep_source_detail: str = ""  # why not, when it cannot


# --- Get-VMInventory.ps1 -------------------------------------------------------------------------
class VhdInfo(Model):
    path: str
    format: VhdFormat
    type: VhdType
    file_size: int = Field(ge=0, description="bytes on disk (what a copy costs)")
    size: int = Field(ge=0, description="virtual size (worst-case growth of a dynamic disk)")
    parent_path: str | None = None
    disk_identifier: str
    attached: bool = False


class DriveInfo(Model):
    controller_type: str
    controller_number: int
    controller_location: int
    path: str | None
    disk_number: int | None = None  # set for a pass-through disk
    shared: bool = False  # SupportPersistentReservations (shared VHDX / VHD Set)
    chain: list[VhdInfo] = []  # chain[0] is the attached file, then its parents

    @property
    def pass_through(self) -> bool:
        return self.disk_number is not None


class CheckpointInfo(Model):
    id: str
    name: str
    parent_id: str | None = None
    created: str


class VMInfo(Model):
    id: str
    name: str
    state: VMStateName
    critical: bool = False  # Hyper-V said <State>Critical: health not OK (e.g. storage low)
    path: str
    configuration_location: str
    snapshot_file_location: str
    smart_paging_file_path: str
    primary_status: str = "Ok"
    secondary_status: str | None = None
    heartbeat: str | None = None
    replication_state: str = "Disabled"
    config_bytes: int = 0
    drives: list[DriveInfo] = []
    checkpoints: list[CheckpointInfo] = []
    checkpoint_files: list[VhdInfo] = []  # disks of checkpoints that are not in a current chain
    dvd_paths: list[str] = []

    def vhd_files(self) -> list[VhdInfo]:
        """Every VHD file the VM owns (current chains and checkpoint disks), each once."""
        seen: dict[str, VhdInfo] = {}
        for drive in self.drives:
            for vhd in drive.chain:
                seen.setdefault(vhd.path.lower(), vhd)
        for vhd in self.checkpoint_files:
            seen.setdefault(vhd.path.lower(), vhd)
        return list(seen.values())


class Inventory(Model):
    host: str
    vms: list[VMInfo]


# --- Get-VolumeInfo.ps1 --------------------------------------------------------------------------
class VolumeInfo(Model):
    path: str  # the path that was asked about
    exists: bool  # whether that path itself exists yet
    volume: str  # root of the volume holding it: 'D:\', 'C:\ClusterStorage\Volume1\', '\\fs\share\'
    kind: VolumeKind
    file_system: str
    capacity: int
    free: int
    label: str = ""
    error: str = ""  # this path could not be resolved (the other fields are then empty)


class VolumeReport(Model):
    volumes: list[VolumeInfo]


# --- Get-OdxStatus.ps1 ---------------------------------------------------------------------------
class OdxStatus(Model):
    source_volume: str
    destination_volume: str
    os_enabled: bool  # FilterSupportedFeaturesMode is 0 or absent
    filters_ok: bool  # every attached minifilter opts in to offload read/write
    source_array: str | None = None
    destination_array: str | None = None
    odx: bool
    reason: str


# --- Measure-Bandwidth.ps1 -----------------------------------------------------------------------
class BandwidthProbe(Model):
    path: str
    bytes: int
    write_seconds: float
    read_seconds: float
    write_mbps: float
    read_mbps: float


# --- storage moves -------------------------------------------------------------------------------
class MoveJob(Model):
    """One Msvm_MigrationJob (JobType 307), as read from WMI."""

    job_id: str
    vm_id: str
    job_state: JobStateName
    percent_complete: int = Field(ge=0, le=100)
    error_code: int = 0
    error_description: str = ""
    start_time: str | None = None
    elapsed_seconds: float = 0.0
    cancellable: bool = True

    @property
    def running(self) -> bool:
        return self.job_state in ("New", "Starting", "Running", "Suspended", "ShuttingDown")

    @property
    def succeeded(self) -> bool:
        return self.job_state == "Completed" and self.error_code == 0


class MoveStart(Model):
    vm_id: str
    status: Literal["started", "already_running", "already_at_destination"]
    job: MoveJob | None = None
    message: str = ""
    warnings: list[str] = []
    # how it was started: "wmi" (MigrateVirtualSystemToHost with AvoidRemovingVHDs: the source
    # stays until hvmove deletes it) or "move-vmstorage" (Hyper-V deletes moved disks' source)
    method: MovePath | None = None


class MoveStatus(Model):
    vm_id: str
    job: MoveJob | None = None
    secondary_status: str | None = None


# --- Get-PrecheckFacts.ps1 -----------------------------------------------------------------------
class PrecheckFactsEntry(Model):
    """One asked VM: what Get-VMInventory and Get-StorageMoveStatus would say of it, or why it
    could not be read (then vm and move are None and the caller asks about it alone)."""

    vm_id: str  # the id as asked
    vm: VMInfo | None = None
    move: MoveStatus | None = None
    error: str = ""


class PrecheckFacts(Model):
    host: str
    vms: list[PrecheckFactsEntry]  # one per asked id, in order


class MoveStop(Model):
    vm_id: str
    requested: bool
    return_value: int | None = None
    job: MoveJob | None = None


# --- Get-VMStoragePaths.ps1 ----------------------------------------------------------------------
class VMPaths(Model):
    id: str
    name: str
    state: VMStateName
    critical: bool = False
    configuration_location: str
    snapshot_file_location: str
    smart_paging_file_path: str
    disk_paths: list[str]  # current disks (attached files)
    checkpoint_disk_paths: list[str] = []
    dvd_paths: list[str] = []
    heartbeat: str | None = None
    primary_status: str = "Ok"
    secondary_status: str | None = None


# --- Get-VHDFacts.ps1 ----------------------------------------------------------------------------
class VhdCheck(Model):
    path: str
    exists: bool
    test_ok: bool | None = None  # Test-VHD result; None when the file does not exist
    vhd: VhdInfo | None = None
    error: str = ""


class VhdReport(Model):
    disks: list[VhdCheck]


# --- Remove-StorageFiles.ps1 ---------------------------------------------------------------------
class Refusal(Model):
    path: str
    reason: str


class RemoveReport(Model):
    removed: list[str] = []
    absent: list[str] = []
    refused: list[Refusal] = []
    folders_removed: list[str] = []
    folders_kept: list[Refusal] = []


# --- Update-ClusterVmConfig.ps1 ------------------------------------------------------------------
class ClusterRefresh(Model):
    vm_id: str
    clustered: bool  # this host is a failover cluster node
    updated: bool  # Update-ClusterVirtualMachineConfiguration succeeded
    detail: str = ""


# --- Find-PathReferences.ps1 ---------------------------------------------------------------------
class PathReferences(Model):
    """Which of the given files and folders this host's VMs use: cleanup asks every host that can
    see a shared volume before it deletes there, since each host only knows its own VMs."""

    host: str
    files: list[Refusal] = []  # a file some VM references (disk, parent in a chain, ISO, config)
    folders: list[Refusal] = []  # a folder holding a VM location or a referenced file


# --- plans: what an admin asks for ---------------------------------------------------------------
class VhdMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    destination: str


class MoveRequest(BaseModel):
    """One VM move, as a plan file states it (validated against the inventory by hvmove.plans)."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1)
    vm: str = Field(min_length=1, description="VM name or id")
    mode: MoveMode = "all"
    destination: str | None = None  # mode all
    virtual_machine_path: str | None = None  # mode components
    snapshot_file_path: str | None = None
    smart_paging_file_path: str | None = None
    vhds: list[VhdMapping] = []  # modes components and vhds
    headroom_percent: float | None = Field(None, ge=0, le=90)
    probe_mib: int | None = Field(None, ge=1, le=4096)
    keep_source_until_verified: bool | None = None

    def label(self) -> str:
        return f"{self.vm}@{self.host}"

    def destination_summary(self) -> str:
        if self.mode == "all":
            return self.destination or ""
        if self.mode == "components":
            return self.virtual_machine_path or (self.vhds[0].destination if self.vhds else "")
        return self.vhds[0].destination if self.vhds else ""


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    moves: list[MoveRequest] = Field(min_length=1)


# --- prechecks -----------------------------------------------------------------------------------
CheckStatus = Literal["pass", "warn", "fail"]


class Check(Model):
    name: str
    status: CheckStatus
    detail: str
    remedy: str = ""
    numbers: dict[str, float | int | str | bool | None] = {}


class PrecheckReport(Model):
    host: str
    vm: str
    vm_id: str = ""
    mode: MoveMode = "all"
    destination: str = ""
    source_volume: str = ""  # volume key of the VM's first disk (host|root, or a share root)
    destination_volume: str = ""  # volume key of the first destination
    needed_by_volume: dict[str, int] = {}  # bytes each destination volume must take
    checks: list[Check] = []
    bytes_to_copy: int = 0
    virtual_bytes: int = 0
    odx: bool | None = None
    mbps: float | None = None
    # the source volume's probe, where the night's planner asked for one (hvmove.batch)
    source_mbps: float | None = None
    eta_seconds: float | None = None
    already_done: bool = False  # every component already lives at the destination
    # how the move starts: "wmi" keeps every source copy until cleanup, "move-vmstorage" lets
    # Hyper-V delete the moved disks' source at the switch
    move_path: MovePath | None = None

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def reason(self) -> str:
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failures())
