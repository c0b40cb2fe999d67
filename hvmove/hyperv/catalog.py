"""The project's PowerShell scripts: what each takes, what it prints, whether it changes the host.

Each operation is ``scripts/<Name>.ps1`` with a ``param(`` block; the values travel as PSRP
parameters, never inside the script text. The JSON document a script prints is parsed into the
model named here. ``mutating`` marks scripts whose lost reply means "maybe ran": a retry must look
at the host before it acts again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pydantic import BaseModel

from hvmove import models, models_doctor


@dataclass(frozen=True)
class ScriptSpec:
    name: str
    model: type[BaseModel]
    mutating: bool
    timeout_s: float  # default deadline for one call
    summary: str


SPECS: dict[str, ScriptSpec] = {
    spec.name: spec
    for spec in [
        ScriptSpec(
            "Get-HostFacts",
            models.HostFacts,
            False,
            60,
            "OS version, MaximumStorageMigrations, default paths, cluster, running moves",
        ),
        ScriptSpec(
            "Get-VMInventory",
            models.Inventory,
            False,
            120,
            "VMs (one by -VmId, or all) with paths, disk chains, checkpoints, ISOs",
        ),
        ScriptSpec(
            "Get-VolumeInfo",
            models.VolumeReport,
            False,
            60,
            "capacity, free space and kind (local/CSV/SMB) of the volume holding each path",
        ),
        ScriptSpec(
            "Get-OdxStatus",
            models.OdxStatus,
            False,
            60,
            "whether a copy between two paths can be offloaded (ODX)",
        ),
        ScriptSpec(
            "Get-PrecheckFacts",
            models.PrecheckFacts,
            False,
            300,
            "many VMs at once (by -VmId): each as Get-VMInventory and Get-StorageMoveStatus "
            "describe it, or its own error",
        ),
        ScriptSpec(
            "Measure-Bandwidth",
            models.BandwidthProbe,
            True,
            600,
            "unbuffered write then read of a test file at the destination; file removed",
        ),
        ScriptSpec(
            "Start-StorageMove",
            models.MoveStart,
            True,
            120,
            "Move-VMStorage in one of the three Move Wizard modes, refusing a second move",
        ),
        ScriptSpec(
            "Get-StorageMoveStatus",
            models.MoveStatus,
            False,
            60,
            "the VM's newest Msvm_MigrationJob (JobType 307)",
        ),
        ScriptSpec(
            "Stop-StorageMove",
            models.MoveStop,
            True,
            60,
            "RequestStateChange(Terminate) on the VM's running migration job",
        ),
        ScriptSpec(
            "Get-VMStoragePaths",
            models.VMPaths,
            False,
            60,
            "the VM's state and every path it references now",
        ),
        ScriptSpec(
            "Get-VHDFacts", models.VhdReport, False, 300, "Test-VHD and Get-VHD for a list of files"
        ),
        ScriptSpec(
            "Remove-StorageFiles",
            models.RemoveReport,
            True,
            300,
            "delete files and emptied folders, refusing anything a VM references",
        ),
        ScriptSpec(
            "Find-PathReferences",
            models.PathReferences,
            False,
            120,
            "which of some files and folders this host's VMs use (read-only)",
        ),
        ScriptSpec(
            "Update-ClusterVmConfig",
            models.ClusterRefresh,
            True,
            120,
            "refresh a clustered VM's cluster configuration resource after its move",
        ),
        # hvmove doctor and hvmove canary (issue 11)
        ScriptSpec(
            "Get-HostReadiness",
            models_doctor.HostReadiness,
            False,
            60,
            "clock, versions, rights, WinRM quotas, cluster volumes/roles, share access",
        ),
        ScriptSpec(
            "New-CanaryVM",
            models_doctor.CanaryCreated,
            True,
            300,
            "the canary's marker files, disks (pattern written through the host) and Off VM",
        ),
        ScriptSpec(
            "Test-CanaryPremises",
            models_doctor.CanaryPremises,
            True,  # mounts a disk read-only for the call
            120,
            "literal paths, Test-VHD on an attached disk, pattern read back, message language",
        ),
        ScriptSpec(
            "Remove-CanaryVM",
            models_doctor.CanaryRemoval,
            True,
            300,
            "remove canary VMs and marked canary folders, nothing else",
        ),
    ]
}

_PARAM_BLOCK = re.compile(r"^\s*param\(", re.IGNORECASE | re.MULTILINE)
_PARAM_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class UnknownScript(KeyError):
    pass


def script_text(name: str) -> str:
    if name not in SPECS:
        raise UnknownScript(name)
    return _read(name)


@cache
def _read(name: str) -> str:
    return resources.files("hvmove.hyperv").joinpath("scripts", f"{name}.ps1").read_text("utf-8")


@cache
def script_parameters(name: str) -> tuple[str, ...]:
    """Names declared in the script's ``param(`` block, in order."""
    return parse_param_names(script_text(name))


def parse_param_names(text: str) -> tuple[str, ...]:
    match = _PARAM_BLOCK.search(text)
    if match is None:
        return ()
    depth, i = 1, match.end()
    while i < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    block = text[match.end() : i - 1]
    names: list[str] = []
    for part in _split_top_level(block):
        name = _declared_name(part)
        if name and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return tuple(names)


def _declared_name(part: str) -> str | None:
    """The variable a declaration names: the first '$Name' outside [attributes(..)]."""
    depth = 0
    for i, ch in enumerate(part):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "$" and depth == 0:
            found = _PARAM_NAME.match(part, i)
            return found.group(1) if found else None
    return None


def _split_top_level(block: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(block):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(block[start:i])
            start = i + 1
    parts.append(block[start:])
    return parts
