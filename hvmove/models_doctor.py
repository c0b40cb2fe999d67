"""Script contracts of `hvmove doctor` and `hvmove canary` (issue 11), kept beside ``models.py``.

Same rules as there: the JSON keys are these field names, the lab builds its replies from these
models, and a key a newer host adds is ignored.
"""

from __future__ import annotations

from pydantic import Field

from hvmove.models import Model


# --- Get-HostReadiness.ps1 -----------------------------------------------------------------------
class WinRMQuotas(Model):
    """The WinRM quotas that bound hvmove's sessions; None when they could not be read."""

    max_shells_per_user: int | None = None  # winrm/config/winrs
    max_concurrent_operations_per_user: int | None = None  # winrm/config/service
    idle_timeout_ms: int | None = None  # winrm/config/winrs
    error: str = ""


class ShareAccess(Model):
    path: str
    reachable: bool  # this session could list the share (False without delegation: double hop)
    error: str = ""
    error_id: str = ""


class ClusterVolume(Model):
    name: str
    path: str  # C:\ClusterStorage\VolumeN
    owner_node: str


class ClusterRole(Model):
    name: str
    owner_node: str


class HostReadiness(Model):
    computer_name: str
    utc_now: str  # the host's clock, ISO-8601 UTC
    ps_version: str
    os_version: str
    os_caption: str = ""
    hyperv_module: str | None  # version of the Hyper-V module, None when it is not installed
    account: str
    is_admin: bool
    is_hyperv_admin: bool  # member of Hyper-V Administrators (S-1-5-32-578)
    winrm: WinRMQuotas
    ui_culture: str
    # Msvm_VirtualSystemMigrationSettingData has AvoidRemovingVHDs; None when it could not be read
    keep_source: bool | None = None
    keep_source_detail: str = ""
    cluster_volumes: list[ClusterVolume] = Field(default_factory=list)
    cluster_roles: list[ClusterRole] = Field(default_factory=list)
    shares: list[ShareAccess] = Field(default_factory=list)


# --- New-CanaryVM.ps1 ----------------------------------------------------------------------------
class CanaryCreated(Model):
    vm_id: str
    name: str
    configuration_location: str
    base_path: str  # the 1 GiB dynamic disk with the pattern
    child_path: str  # its differencing child, with brackets in its name
    pattern_sha256: str  # of the pattern file written inside the base disk
    markers: list[str] = Field(default_factory=list)


# --- Test-CanaryPremises.ps1 ---------------------------------------------------------------------
class CanaryPremises(Model):
    literal_path_ok: bool  # Get-VHD -Path found exactly the named file (brackets taken literally)
    literal_path_detail: str = ""
    attached_test_vhd: bool | None  # Test-VHD on a disk while it is attached (mounted)
    attached_detail: str = ""
    pattern_sha256: str = ""  # read back from the base disk, wherever it lives now
    ui_culture: str = ""
    sample_error: str = ""  # Get-VM's error for an unknown id, in the host's language
    sample_error_id: str = ""


# --- Remove-CanaryVM.ps1 -------------------------------------------------------------------------
class CanaryItem(Model):
    path: str
    reason: str = ""


class CanaryRemoval(Model):
    vms_removed: list[CanaryItem] = Field(default_factory=list)  # path = VM id, reason = name
    folders_removed: list[str] = Field(default_factory=list)
    kept: list[CanaryItem] = Field(default_factory=list)
