"""Lab scripts that decide what may be deleted and delete it: Remove-StorageFiles and
Find-PathReferences, with the reference collection both share."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

from hvmove import models
from hvmove.lab import vhd
from hvmove.lab.estate import is_absolute_windows, norm
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import ScriptFailed


@dataclass
class Refs:
    """What the VMs of a host reference: files by reference key and by identity, location folders,
    and the chains that could not be followed to their end."""

    files: set[str] = field(default_factory=set)
    ids: dict[str, str] = field(default_factory=dict)  # file identity -> whose and which path
    folders: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    walked: set[str] = field(default_factory=set)


class CleanupScripts(ScriptBase):
    def _referenced(self, host: str) -> Refs:
        """What the VMs of this host reference, as Remove-StorageFiles and Find-PathReferences
        collect it: every file (disks with their parent chains, checkpoint disks, ISOs, config)
        by reference key (``ref_key``) and by file identity, every location folder, plus the
        chains that could not be followed to their end. Like Get-VM on a real host, the VMs of
        other hosts are not seen, even where they share a volume with this one."""
        refs = Refs()
        for vm in self.estate.vms_on(host):
            for d in vm.drives:
                if d.path and d.disk_number is None:
                    self._walk_chain(host, d.path, vm.name, refs)
            for cp in vm.checkpoints:
                for path in cp.disk_paths:
                    self._walk_chain(host, path, vm.name, refs)
            for iso in vm.dvd_paths:
                refs.files.add(ref_key(iso))
                with contextlib.suppress(ScriptFailed, OSError):
                    refs.ids[self._file_id(host, iso)] = f"an ISO file of VM '{vm.name}'"
            refs.files.add(ref_key(vm.config_file()))
            refs.folders += [
                ref_key(f)
                for f in (
                    vm.configuration_location,
                    vm.snapshot_file_location,
                    vm.smart_paging_file_path,
                )
            ]
        return refs

    def _walk_chain(self, host: str, path: str, owner: str, refs: Refs) -> None:
        """Add-HvmChain: a missing parent, a share this session cannot reach, an identity or a
        Get-VHD that cannot be read leaves the chain unread instead of ending it quietly."""
        current: str | None = path
        depth = 0
        while current and depth < 64:
            key = ref_key(current)
            refs.files.add(key)
            if key in refs.walked:
                return
            refs.walked.add(key)
            state = self._path_state(host, current)
            if state != "exists":
                if depth > 0 or current.startswith("\\\\") or state != "absent":
                    refs.unread.append(f"'{current}' of VM '{owner}' ({state})")
                return
            try:
                refs.ids[self._file_id(host, current)] = f"a disk of VM '{owner}' ('{current}')"
                current = self._hvm_vhd(host, current).parent_path
            except (OSError, ValueError, vhd.VhdCorrupt, ScriptFailed) as exc:
                refs.unread.append(f"'{current}' of VM '{owner}' ({exc})")
                return
            depth += 1

    def _host_defaults(self, host: str) -> list[str]:
        h = self.estate.host(host)
        return [ref_key(h.virtual_hard_disk_path), ref_key(h.virtual_machine_path)]

    def _file_refusal(self, host: str, path: str, refs: Refs) -> str | None:
        """Why Remove-StorageFiles keeps an existing file: referenced by text or by identity,
        an identity or Get-VHD it cannot read, a chain it could not read. None: delete it."""
        refusals = self.estate.settings.script_refusals
        if refusals and ref_key(path) in refs.files:
            return "a virtual machine still references this file"
        try:
            file_id = self._file_id(host, path)
        except (ScriptFailed, OSError) as exc:
            return f"its file identity cannot be read ({exc})"
        if refusals and file_id in refs.ids:
            return f"referenced under another name: {refs.ids[file_id]}"
        if not _is_virtual_disk(path):
            return None
        if refs.unread:
            return _maybe_parent(refs.unread)
        try:
            self._hvm_vhd(host, path)
        except (OSError, ValueError, TypeError, vhd.VhdCorrupt, ScriptFailed) as exc:
            return f"Get-VHD failed, so it might be in use: {exc}"
        return None

    @script("Remove-StorageFiles")
    def remove_files(self, host: str, p: dict[str, Any]) -> models.RemoveReport:
        report = models.RemoveReport()
        with self.estate.lock:
            refs = self._referenced(host)
            for path in as_list(p.get("Path")):
                if not is_absolute_windows(path):
                    report.refused.append(models.Refusal(path=path, reason="not an absolute path"))
                    continue
                if self.estate.settings.script_refusals and ref_key(path) in refs.files:
                    report.refused.append(
                        models.Refusal(
                            path=path, reason="a virtual machine still references this file"
                        )
                    )
                    continue
                state = self._path_state(host, path)
                reason = None
                if state == "absent":
                    report.absent.append(path)
                    continue
                if state != "exists":
                    reason = f"cannot be checked: {state}"
                elif self._local(host, path).is_dir():
                    reason = "is a folder"
                else:
                    reason = self._file_refusal(host, path, refs)
                if reason:
                    report.refused.append(models.Refusal(path=path, reason=reason))
                else:
                    self._local(host, path).unlink()
                    report.removed.append(path)
            folders = sorted(
                as_list(p.get("Folder")), key=lambda f: norm(f).count("\\"), reverse=True
            )
            for folder in folders:
                self._remove_folder(host, folder, refs, report)
        return report

    def _remove_folder(
        self, host: str, folder: str, refs: Refs, report: models.RemoveReport
    ) -> None:
        key = ref_key(folder)
        inside = [loc for loc in refs.folders if loc == key or loc.startswith(key + "\\")]
        users = [f for f in refs.files if f.startswith(key + "\\")]
        state = self._path_state(host, folder)
        if inside or users:
            report.folders_kept.append(
                models.Refusal(path=folder, reason="a virtual machine uses this folder")
            )
        elif state == "absent":
            report.absent.append(folder)
        elif state != "exists":
            report.folders_kept.append(
                models.Refusal(path=folder, reason=f"cannot be checked: {state}")
            )
        elif any(self._local(host, folder).iterdir()):
            report.folders_kept.append(models.Refusal(path=folder, reason="not empty"))
        else:
            self._local(host, folder).rmdir()
            report.folders_removed.append(folder)

    @script("Find-PathReferences")
    def find_references(self, host: str, p: dict[str, Any]) -> models.PathReferences:
        out = models.PathReferences(host=self.estate.host(host).name.upper())
        with self.estate.lock:
            refs = self._referenced(host)
            defaults = self._host_defaults(host)
            refusals = self.estate.settings.script_refusals
            for path in as_list(p.get("Path")):
                reason = None
                if not is_absolute_windows(path):
                    reason = "not an absolute path"
                elif refusals and ref_key(path) in refs.files:
                    reason = "a virtual machine references this file"
                elif ref_key(path) in defaults:
                    reason = "a default folder of this host"
                if reason is None and refs.unread and _is_virtual_disk(path):
                    reason = _maybe_parent(refs.unread)
                if reason is None:
                    reason = self._identity_reason(host, path, refs)
                if reason:
                    out.files.append(models.Refusal(path=path, reason=reason))
            for folder in as_list(p.get("Folder")):
                key = ref_key(folder)
                inside = [
                    x
                    for x in [*refs.folders, *refs.files, *defaults]
                    if x == key or x.startswith(key + "\\")
                ]
                if inside:
                    out.folders.append(
                        models.Refusal(path=folder, reason=f"{inside[0]!r} lies inside")
                    )
        return out

    def _identity_reason(self, host: str, path: str, refs: Refs) -> str | None:
        """Find-PathReferences by identity: the same file under another spelling is used; a file
        whose identity cannot be read, or a path that cannot be reached, is reported as kept."""
        state = self._path_state(host, path)
        if state == "absent":
            return None
        if state != "exists":
            return f"cannot be checked from this host: {state}"
        try:
            file_id = self._file_id(host, path)
        except (ScriptFailed, OSError) as exc:
            return f"its file identity cannot be read on this host ({exc})"
        if self.estate.settings.script_refusals and file_id in refs.ids:
            return f"referenced under another name: {refs.ids[file_id]}"
        return None


def ref_key(path: str) -> str:
    """Get-HvmRefKey: a normalised path, on a share without its server name (hosts may name one
    file server differently; a false match only keeps a file)."""
    key = norm(path)
    if key.startswith("\\\\"):
        cut = key.find("\\", 2)
        if cut > 2:
            return "\\\\*" + key[cut:]
    return key


def _is_virtual_disk(path: str) -> bool:
    return PureWindowsPath(path).suffix.lower() in {".vhd", ".vhdx", ".avhd", ".avhdx", ".vhds"}


def _maybe_parent(unread: list[str]) -> str:
    return (
        f"a virtual disk, and the chain of {unread[0]} could not be read, so it might be a parent"
    )
