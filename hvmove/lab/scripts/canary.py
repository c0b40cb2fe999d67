"""Lab scripts of `hvmove canary`: New-CanaryVM, Test-CanaryPremises, Remove-CanaryVM, and the
premise the canary observes about sessions (does a move outlive the shell that started it).

Each premise no document settles comes out as the lab's ``settings.premises`` says, so that both
answers are handled and reported (see ``LabPremises`` for the sources of each default)."""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from pathlib import Path, PureWindowsPath
from typing import Any

from hvmove import models_doctor as md
from hvmove.lab import vhd
from hvmove.lab.build import make_disk
from hvmove.lab.estate import LabDrive, LabVM, PathError, norm
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import Invocation, ScriptFailed

MARKER = "hvmove-canary.marker"
_NAME = re.compile(r"^hvmove-canary-[a-z0-9]+$", re.IGNORECASE)
_GiB = 1024**3
_MiB = 1024**2


def pattern_sha256(path: Path) -> str:
    """The lab's stand-in for the pattern file inside the base disk: a digest of its blocks."""
    header = vhd.read_header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(header.data_offset)
        for _ in range(header.blocks):
            digest.update(fh.read(header.block_size))
    return digest.hexdigest()


class CanaryScripts(ScriptBase):
    # -- the session premise ---------------------------------------------------------------------
    def note_started(self, inv: Invocation, name: str, reply: Any) -> None:
        """Remember which shell started which job (for ``shell_closed``): the session's job
        cache. Start-StorageMove first removes the session's finished jobs (Remove-Job of the
        Completed, Failed and Stopped ones): "the job remains in the global job cache until you
        close the session" otherwise (learn.microsoft.com/powershell/module/
        microsoft.powershell.core/remove-job)."""
        if name != "Start-StorageMove" or getattr(reply, "status", "") != "started":
            return
        started: dict[str, list[str]] = self.__dict__.setdefault("_started_by", {})
        running = {j.job_id for j in self.engine.jobs if j.running}
        cache = started.setdefault(inv.shell_id, [])
        cache[:] = [job_id for job_id in cache if job_id in running]
        if reply.job is None:  # "started" before Hyper-V showed the job: nothing to remember
            return
        cache.append(reply.job.job_id)

    def session_jobs(self) -> dict[str, list[str]]:
        """shell id -> the ids of the jobs its session holds (for tests)."""
        return {k: list(v) for k, v in self.__dict__.get("_started_by", {}).items()}

    def shell_closed(self, host: str, shell_id: str) -> None:
        """A WinRM shell was deleted. Whether Move-VMStorage -AsJob's migration goes on is the
        premise ``jobs_survive_session_close``; if it does not, the job is cancelled as Stop-Job
        would cancel it (RequestStateChange(4), hyperv.md section 2.4)."""
        started: dict[str, list[str]] = self.__dict__.setdefault("_started_by", {})
        job_ids = set(started.pop(shell_id, []))
        if not job_ids or self.estate.settings.premises.jobs_survive_session_close:
            return
        for job in list(self.engine.jobs):
            if job.job_id in job_ids and job.running:
                job.cancel.set()

    # -- New-CanaryVM ----------------------------------------------------------------------------
    @script("New-CanaryVM")
    def new_canary(self, host: str, p: dict[str, Any]) -> md.CanaryCreated:
        name = str(p.get("Name") or "")
        path = str(p.get("Path") or "")
        folders = [path, *as_list(p.get("MarkerFolder"))]
        if not _NAME.match(name):
            raise ScriptFailed(
                f"Name '{name}' must be 'hvmove-canary-' followed by lower-case letters and digits"
            )
        for folder in folders:
            win = PureWindowsPath(folder.rstrip("\\"))
            if win.name != name:
                raise ScriptFailed(f"Folder '{folder}' must be named '{name}'")
            if not self._local(host, str(win.parent)).is_dir():
                raise ScriptFailed(
                    f"Folder '{win.parent}' does not exist; give a folder that exists"
                )
        with self.estate.lock:
            if any(vm.name == name for vm in self.estate.vms_on(host)):
                raise ScriptFailed(f"A VM named '{name}' already exists")
            markers = []
            for folder in dict.fromkeys(folders):
                local = self._local(host, folder)
                local.mkdir(parents=True, exist_ok=True)
                (local / MARKER).write_text(str(p.get("Marker") or ""), encoding="utf-8")
                markers.append(str(PureWindowsPath(folder, MARKER)))
            base = str(PureWindowsPath(path, f"{name}.vhdx"))
            child = str(PureWindowsPath(path, f"{name} [child].vhdx"))
            # New-VHD -Dynamic 1GB, then NTFS and a 1 MiB pattern file: about 40 MiB on disk
            make_disk(
                self.estate, host, base, size=_GiB, file_size=40 * _MiB, type_="Dynamic", seed=name
            )
            make_disk(
                self.estate,
                host,
                child,
                size=_GiB,
                file_size=4 * _MiB,
                type_="Differencing",
                parent=base,
                seed=child,
            )
            vm = LabVM(
                id=str(uuid.uuid4()),
                name=name,
                host=host,
                state="Off",
                configuration_location=path,
                snapshot_file_location=path,
                smart_paging_file_path=path,
                drives=[LabDrive(path=child)],
            )
            config = self._local(host, vm.config_file())
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_bytes(b"<vmcx lab=1/>".ljust(256, b" "))
            self.estate.data.vms.append(vm)
            self.estate.save()
        return md.CanaryCreated(
            vm_id=vm.id,
            name=name,
            configuration_location=path,
            base_path=base,
            child_path=child,
            pattern_sha256=pattern_sha256(self._local(host, base)),
            markers=markers,
        )

    # -- Test-CanaryPremises ---------------------------------------------------------------------
    @script("Test-CanaryPremises")
    def canary_premises(self, host: str, p: dict[str, Any]) -> md.CanaryPremises:
        premises = self.estate.settings.premises
        disk = str(p.get("DiskPath") or "")
        base = str(p.get("BasePath") or "")
        found = self._get_vhd_matches(host, disk, literal=premises.literal_paths)
        literal_ok = found == [disk]
        detail = f"Get-VHD returned {len(found)} disk(s): {', '.join(found)}"
        attached: bool | None = None
        attached_detail = ""
        digest = ""
        try:
            local = self._local(host, base)
            problem = vhd.check(local, lambda parent: self._local(host, parent))
            digest = pattern_sha256(local)
            if premises.test_vhd_attached_ok:
                attached, attached_detail = not problem, problem
            else:
                attached = False
                attached_detail = "lab premise test_vhd_attached_ok=false: Test-VHD said False"
        except (OSError, ValueError, vhd.VhdCorrupt, ScriptFailed) as exc:
            attached_detail = f"Mount-VHD or Test-VHD failed: {exc}"
        h = self.estate.host(host)
        message = f"Hyper-V was unable to find a virtual machine with ID '{uuid.uuid4()}'."
        if not h.ui_culture.lower().startswith("en"):
            # the lab has no translated Hyper-V resources; it marks the culture instead
            message = f"[{h.ui_culture}] {message}"
        return md.CanaryPremises(
            literal_path_ok=literal_ok,
            literal_path_detail=detail,
            attached_test_vhd=attached,
            attached_detail=attached_detail,
            pattern_sha256=digest,
            ui_culture=h.ui_culture,
            sample_error=message,
            sample_error_id="InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
        )

    def _get_vhd_matches(self, host: str, path: str, *, literal: bool) -> list[str]:
        """The files Get-VHD -Path resolves: the one named, or (premise literal_paths=false)
        those matching it as a PowerShell wildcard pattern ([abc] is one of a, b, c)."""
        win = PureWindowsPath(path)
        try:
            folder = self._local(host, str(win.parent))
        except ScriptFailed:
            return []
        if not folder.is_dir():
            return []
        names = sorted(e.name for e in folder.iterdir() if e.is_file())
        if literal:
            return [path] if win.name.lower() in (n.lower() for n in names) else []
        pattern = re.compile(_wildcard(win.name), re.IGNORECASE)
        return [str(PureWindowsPath(win.parent, n)) for n in names if pattern.fullmatch(n)]

    # -- Remove-CanaryVM -------------------------------------------------------------------------
    @script("Remove-CanaryVM")
    def remove_canary(self, host: str, p: dict[str, Any]) -> md.CanaryRemoval:
        canary_id = str(p.get("CanaryId") or "")
        if canary_id and not re.fullmatch(r"[a-z0-9]+", canary_id, re.IGNORECASE):
            raise ScriptFailed(f"CanaryId '{canary_id}' is not a canary id")
        wanted = f"hvmove-canary-{canary_id}".lower() if canary_id else None
        out = md.CanaryRemoval()
        with self.estate.lock:
            for vm in list(self.estate.vms_on(host)):
                if not vm.name.lower().startswith("hvmove-canary-"):
                    continue
                if wanted and vm.name.lower() != wanted:
                    continue
                job = self.engine.newest_job(vm.id)
                if job is not None and job.running:
                    out.kept.append(
                        md.CanaryItem(
                            path=vm.id, reason=f"VM '{vm.name}' is being moved; stop the move first"
                        )
                    )
                    continue
                unmarked = [x for x in _vm_paths(vm) if not self._marked_folder(host, x)]
                if unmarked:
                    out.kept.append(
                        md.CanaryItem(
                            path=vm.id,
                            reason=f"VM '{vm.name}' uses '{unmarked[0]}', which is not in a "
                            "marked canary folder",
                        )
                    )
                    continue
                self.estate.data.vms.remove(vm)  # Remove-VM: the VM goes, its files stay
                out.vms_removed.append(md.CanaryItem(path=vm.id, reason=vm.name))
            in_use = {norm(x) for vm in self.estate.vms_on(host) for x in _vm_paths(vm)}
            for root in as_list(p.get("Root")):
                self._remove_folders(host, root, wanted, in_use, out)
            self.estate.save()
        return out

    def _remove_folders(
        self, host: str, root: str, wanted: str | None, in_use: set[str], out: md.CanaryRemoval
    ) -> None:
        try:
            local_root = self.estate.local(host, root)
        except PathError:
            return
        if not local_root.is_dir():
            return
        for entry in sorted(local_root.iterdir()):
            if not entry.is_dir() or not entry.name.lower().startswith("hvmove-canary-"):
                continue
            if wanted and entry.name.lower() != wanted:
                continue
            folder = str(PureWindowsPath(root, entry.name))
            if not self._marked_folder(host, folder):
                out.kept.append(
                    md.CanaryItem(path=folder, reason="no marker file naming this canary")
                )
                continue
            key = norm(folder)
            users = sorted(x for x in in_use if x == key or x.startswith(key + "\\"))
            if users:
                out.kept.append(md.CanaryItem(path=folder, reason=f"a VM still uses '{users[0]}'"))
                continue
            shutil.rmtree(entry)
            out.folders_removed.append(folder)

    def _marked_folder(self, host: str, path: str) -> str | None:
        """Get-HvmMarkedFolder: the nearest folder named hvmove-canary-<id> at or above a path,
        when its marker file names that id."""
        current = PureWindowsPath(path.rstrip("\\"))
        while True:
            if _NAME.match(current.name):
                try:
                    marker = self.estate.local(host, str(current / MARKER))
                except PathError:
                    return None
                canary_id = current.name[len("hvmove-canary-") :]
                if marker.is_file() and f'"{canary_id}"' in marker.read_text("utf-8", "replace"):
                    return str(current)
                return None
            if current.parent == current:
                return None
            current = current.parent


def _vm_paths(vm: LabVM) -> list[str]:
    paths = [vm.configuration_location, vm.snapshot_file_location, vm.smart_paging_file_path]
    return paths + [d.path for d in vm.drives if d.path]


def _wildcard(pattern: str) -> str:
    """A PowerShell wildcard pattern (*, ?, [set]) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + re.escape(pattern[i + 1 : end]) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
