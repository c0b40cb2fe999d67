"""Lab scripts that decide what may be deleted and delete it: Remove-StorageFiles and
Find-PathReferences, with the reference collection both share."""

from __future__ import annotations

from pathlib import PureWindowsPath
from typing import Any

from hvmove import models
from hvmove.lab import vhd
from hvmove.lab.estate import PathError, is_absolute_windows, norm
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import ScriptFailed


class CleanupScripts(ScriptBase):
    def _referenced(self, host: str) -> tuple[set[str], list[str], list[str]]:
        """What the VMs of this host reference, as Remove-StorageFiles and Find-PathReferences
        collect it: every file (disks with their parent chains, checkpoint disks, ISOs, config)
        and every location folder as reference keys (``ref_key``), plus the chains that could
        not be followed to their end. Like Get-VM on a real host, the VMs of other hosts are not
        seen, even where they share a volume with this one."""
        files: set[str] = set()
        folders: list[str] = []
        unread: list[str] = []
        walked: set[str] = set()
        for vm in self.estate.vms_on(host):
            for d in vm.drives:
                if d.path and d.disk_number is None:
                    self._walk_chain(host, d.path, vm.name, files, walked, unread)
            for cp in vm.checkpoints:
                for path in cp.disk_paths:
                    self._walk_chain(host, path, vm.name, files, walked, unread)
            files.update(ref_key(p) for p in vm.dvd_paths)
            files.add(ref_key(vm.config_file()))
            folders += [
                vm.configuration_location,
                vm.snapshot_file_location,
                vm.smart_paging_file_path,
            ]
        return files, [ref_key(f) for f in folders], unread

    def _walk_chain(
        self,
        host: str,
        path: str,
        owner: str,
        files: set[str],
        walked: set[str],
        unread: list[str],
    ) -> None:
        """Add-HvmChain: a missing parent, or a share this session cannot see (Test-Path says
        False on "access denied"), leaves the chain unread instead of ending it quietly."""
        current: str | None = path
        depth = 0
        while current and depth < 64:
            key = ref_key(current)
            files.add(key)
            if key in walked:
                return
            walked.add(key)
            try:
                local = (
                    None if self._double_hop(host, current) else self.estate.local(host, current)
                )
            except PathError:
                local = None
            if local is None or not local.exists():
                if depth > 0 or current.startswith("\\\\"):
                    unread.append(
                        f"'{current}' of VM '{owner}' (not found, or not reachable from this "
                        "session)"
                    )
                return
            try:
                current = self._vhd_info(host, current).parent_path
            except (OSError, ValueError, vhd.VhdCorrupt, ScriptFailed) as exc:
                unread.append(f"'{current}' of VM '{owner}' ({exc})")
                return
            depth += 1

    def _host_defaults(self, host: str) -> list[str]:
        h = self.estate.host(host)
        return [ref_key(h.virtual_hard_disk_path), ref_key(h.virtual_machine_path)]

    @script("Remove-StorageFiles")
    def remove_files(self, host: str, p: dict[str, Any]) -> models.RemoveReport:
        report = models.RemoveReport()
        with self.estate.lock:
            files, locations, unread = self._referenced(host)
            for path in as_list(p.get("Path")):
                if not is_absolute_windows(path):
                    report.refused.append(models.Refusal(path=path, reason="not an absolute path"))
                    continue
                if self.estate.settings.script_refusals and ref_key(path) in files:
                    report.refused.append(
                        models.Refusal(
                            path=path, reason="a virtual machine still references this file"
                        )
                    )
                    continue
                local = self._local(host, path)
                if local.is_dir():
                    report.refused.append(models.Refusal(path=path, reason="is a folder"))
                elif not local.exists():
                    report.absent.append(path)
                elif unread and _is_virtual_disk(path):
                    report.refused.append(models.Refusal(path=path, reason=_maybe_parent(unread)))
                else:
                    local.unlink()
                    report.removed.append(path)
            folders = sorted(
                as_list(p.get("Folder")), key=lambda f: norm(f).count("\\"), reverse=True
            )
            for folder in folders:
                key = ref_key(folder)
                inside = [loc for loc in locations if loc == key or loc.startswith(key + "\\")]
                users = [f for f in files if f.startswith(key + "\\")]
                local = self._local(host, folder)
                if inside or users:
                    report.folders_kept.append(
                        models.Refusal(path=folder, reason="a virtual machine uses this folder")
                    )
                elif not local.exists():
                    report.absent.append(folder)
                elif any(local.iterdir()):
                    report.folders_kept.append(models.Refusal(path=folder, reason="not empty"))
                else:
                    local.rmdir()
                    report.folders_removed.append(folder)
        return report

    @script("Find-PathReferences")
    def find_references(self, host: str, p: dict[str, Any]) -> models.PathReferences:
        out = models.PathReferences(host=self.estate.host(host).name.upper())
        with self.estate.lock:
            files, locations, unread = self._referenced(host)
            defaults = self._host_defaults(host)
            for path in as_list(p.get("Path")):
                reason = None
                if not is_absolute_windows(path):
                    reason = "not an absolute path"
                elif self.estate.settings.script_refusals and ref_key(path) in files:
                    reason = "a virtual machine references this file"
                elif ref_key(path) in defaults:
                    reason = "a default folder of this host"
                elif unread and _is_virtual_disk(path):
                    reason = _maybe_parent(unread)
                if reason:
                    out.files.append(models.Refusal(path=path, reason=reason))
            for folder in as_list(p.get("Folder")):
                key = ref_key(folder)
                inside = [
                    x
                    for x in [*locations, *files, *defaults]
                    if x == key or x.startswith(key + "\\")
                ]
                if inside:
                    out.folders.append(
                        models.Refusal(path=folder, reason=f"{inside[0]!r} lies inside")
                    )
        return out


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
