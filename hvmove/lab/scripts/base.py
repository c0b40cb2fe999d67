"""What every lab script shares: the estate and engine, and the small lookups each script makes
(a VM by id, a path on the host's volumes, a disk's Get-VHD facts and chain)."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any, TypeVar

from hvmove import models
from hvmove.lab import vhd
from hvmove.lab.engine import Engine
from hvmove.lab.estate import Estate, LabVM, PathError, norm
from hvmove.lab.wsman import ScriptFailed

F = TypeVar("F", bound=Callable[..., Any])
_WILDCARD = re.compile(r"[\[\]*?']")


def script(name: str) -> Callable[[F], F]:
    """Marks a method as the lab's implementation of the project script ``name``."""

    def mark(fn: F) -> F:
        fn.lab_script = name  # type: ignore[attr-defined]
        return fn

    return mark


class ScriptBase:
    estate: Estate
    engine: Engine
    start_without_job: bool = False
    # norm(path) of files whose identity cannot be read (a file system or share that does not
    # answer FILE_ID_INFO): Get-HvmFileId fails for them
    no_file_id: frozenset[str] = frozenset()
    # Update-ClusterVmConfig: the VM ids refreshed, and a message that makes the refresh fail
    cluster_refreshed: list[str]
    cluster_refresh_error: str = ""

    def _vm(self, host: str, vm_id: Any) -> LabVM:
        vm = self.estate.vm(host, str(vm_id or ""))
        if vm is None:
            # the project script's own wording (it wraps Get-VM's error)
            raise ScriptFailed(
                f"VM {vm_id} not found on this host: Hyper-V was unable to find a virtual machine "
                f"with id '{vm_id}'.",
                "VMNotFound",
                "ObjectNotFound",
            )
        return vm

    def _local(self, host: str, path: str) -> Path:
        try:
            return self.estate.local(host, path)
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None

    def _vhd_info(self, host: str, path: str, attached: bool = False) -> models.VhdInfo:
        header = vhd.read_header(self._local(host, path))
        scale = self.estate.settings.size_scale
        return models.VhdInfo(
            path=path,
            format=header.format,  # type: ignore[arg-type]
            type=header.type,  # type: ignore[arg-type]
            file_size=os.path.getsize(self._local(host, path)) * scale,
            size=header.size,
            parent_path=header.parent_path,
            disk_identifier=header.disk_identifier,
            attached=attached,
        )

    def _get_vhd(self, host: str, path: str, attached: bool = False) -> models.VhdInfo:
        """The Get-VHD (and Test-VHD) cmdlet on -Path. Its page says "Accept wildcard characters:
        False", but the decompiled cmdlet resolves [ ] * ? as a pattern first (review
        windows-scripts.md finding 5): which one a host does is the premise ``literal_paths``."""
        if _WILDCARD.search(path) and not self.estate.settings.premises.literal_paths:
            win = PureWindowsPath(path)
            folder = self._local(host, str(win.parent))
            names = [e.name for e in folder.iterdir()] if folder.is_dir() else []
            pattern = win.name.lower()
            found = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern)]
            if [n.lower() for n in found] != [win.name.lower()]:
                raise ScriptFailed(
                    f"Get-VHD: '{path}' resolved to {len(found)} file(s) as a wildcard pattern",
                    "ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD",
                    "ObjectNotFound",
                )
        return self._vhd_info(host, path, attached)

    def _hvm_vhd(self, host: str, path: str, attached: bool = False) -> models.VhdInfo:
        """Get-HvmVhd: the cmdlet for a plain name; for a name with [ ] * ? ' the literal path
        through Msvm_ImageManagementService.GetVirtualHardDiskSettingData."""
        if _WILDCARD.search(path):
            return self._vhd_info(host, path, attached)
        return self._get_vhd(host, path, attached)

    def _chain(self, host: str, path: str, attached: bool) -> list[models.VhdInfo]:
        chain: list[models.VhdInfo] = []
        current: str | None = path
        while current and len(chain) < 64:
            # Get-VMInventory: a disk Get-VHD cannot read ends the chain there, with a warning
            if self._double_hop(host, current):
                break
            try:
                info = self._hvm_vhd(host, current, attached and not chain)
            except (OSError, ValueError, vhd.VhdCorrupt, ScriptFailed):
                break
            chain.append(info)
            current = info.parent_path
        return chain

    def _double_hop(self, host: str, path: str) -> bool:
        return path.startswith("\\\\") and not self.estate.host(host).smb_delegation

    def _test_path(self, host: str, path: str) -> bool:
        """Test-Path -LiteralPath as Windows PowerShell 5.1 runs it under
        $ErrorActionPreference = 'Stop': on access denied (a share reached without delegation)
        FileSystemProvider.ItemExists writes ItemExistsUnauthorizedAccessError, which Stop turns
        into a terminating error (PowerShell src/.../namespaces/FileSystemProvider.cs)."""
        if self._double_hop(host, path):
            raise ScriptFailed(
                f"Access is denied: '{path}'",
                "ItemExistsUnauthorizedAccessError,Microsoft.PowerShell.Commands.TestPathCommand",
                "PermissionDenied",
                hresult=0x80070005,
            )
        try:
            return self.estate.local(host, path).exists()
        except PathError:
            return False

    def _path_state(self, host: str, path: str) -> str:
        """Get-HvmPathState: 'exists', 'absent' or 'unreachable: <why>' (Test-Path with
        -ErrorAction SilentlyContinue -ErrorVariable)."""
        try:
            return "exists" if self._test_path(host, path) else "absent"
        except ScriptFailed as exc:
            return f"unreachable: {exc.message}"

    def _file_id(self, host: str, path: str) -> str:
        """Get-HvmFileId: the file's identity (volume serial + file id; here the real file's
        device and inode), the same under every spelling of the path. Raises when unreadable."""
        if self._double_hop(host, path):
            raise ScriptFailed(f"Access is denied: '{path}'", "Win32Exception", "PermissionDenied")
        if norm(path) in self.no_file_id:
            raise ScriptFailed(
                "The request is not supported. (FileIdInfo)", "Win32Exception", "NotSpecified"
            )
        st = self._local(host, path).stat()
        return f"{st.st_dev:x}:{st.st_ino:x}"

    def _volume(self, host: str, path: str):
        try:
            return self.estate.volume_of(host, path)
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None


def windows_state(vm: LabVM) -> str:
    """VM.State as Hyper-V reports it: with a Critical suffix when the VM's health is not OK."""
    return vm.state + ("Critical" if vm.critical else "")


def state_name(state: str) -> tuple[str, bool]:
    """Get-HvmStateName and Test-HvmCritical: the state without its Critical suffix, and whether
    it had one."""
    critical = state.endswith("Critical")
    text = state.removesuffix("Critical")
    if text in ("Running", "Off", "Saved", "Paused", "Starting", "Stopping"):
        return text, critical
    return ("Saved" if text == "FastSaved" else "Other"), critical


def heartbeat(vm: LabVM) -> str | None:
    """Get-HvmHeartbeat: the heartbeat service's status."""
    if vm.heartbeat is not None:
        return vm.heartbeat
    return "OkApplicationsUnknown" if vm.state == "Running" else None


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]
