"""The lab's implementation of each project script, behind the same parameters and JSON contract.

The endpoint hands every pipeline to ``LabScripts.dispatch``. The script is recognised by its
exact text (a changed or foreign script is refused, as an unknown cmdlet would be), its parameters
are bound against the script's own ``param(`` block, and the reply is built from the same
pydantic models the client parses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any

from pydantic import BaseModel

from hvmove import models
from hvmove.hyperv.catalog import SPECS, parse_param_names, script_text
from hvmove.lab import vhd
from hvmove.lab.engine import CopyItem, Engine, Job, guest_disk
from hvmove.lab.estate import Estate, LabVM, PathError, is_absolute_windows, norm
from hvmove.lab.wsman import Invocation, ScriptFailed

Handler = Callable[[str, dict[str, Any]], BaseModel]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LabScripts:
    def __init__(self, estate: Estate, engine: Engine) -> None:
        self.estate = estate
        self.engine = engine
        self.by_digest = {_digest(script_text(name)): name for name in SPECS}
        if len(self.by_digest) != len(SPECS):
            raise RuntimeError(
                "two project scripts have the same text; the lab cannot tell them apart"
            )
        self.handlers: dict[str, Handler] = {
            "Get-HostFacts": self.host_facts,
            "Get-VMInventory": self.inventory,
            "Get-VolumeInfo": self.volume_info,
            "Get-OdxStatus": self.odx_status,
            "Measure-Bandwidth": self.bandwidth,
            "Start-StorageMove": self.start_move,
            "Get-StorageMoveStatus": self.move_status,
            "Stop-StorageMove": self.stop_move,
            "Get-VMStoragePaths": self.vm_paths,
            "Get-VHDFacts": self.vhd_facts,
            "Remove-StorageFiles": self.remove_files,
            "Find-PathReferences": self.find_references,
        }
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (host, script, params) for tests
        self.delays: dict[str, float] = {}  # script -> seconds: a host slow to answer that script
        # script -> message: the script also writes a non-terminating error (like Write-Error)
        self.write_errors: dict[str, str] = {}

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(self, inv: Invocation) -> str:
        name = self.by_digest.get(_digest(inv.script)) if inv.is_script else None
        if name is None:
            first = inv.script.strip().splitlines()[0][:80] if inv.script.strip() else "<empty>"
            raise ScriptFailed(
                f"The lab does not know this script or command ({first!r}); only hvmove's own "
                "scripts run here.",
                "CommandNotFoundException",
                "ObjectNotFound",
            )
        params = self._bind(name, inv.params)
        self.calls.append((inv.host, name, params))
        if self.delays.get(name):
            time.sleep(self.delays[name])
        if name in self.write_errors:
            inv.errors.append(self.write_errors[name])
        result = self.handlers[name](inv.host, params)
        return result.model_dump_json()

    def _bind(self, name: str, sent: dict[str, Any]) -> dict[str, Any]:
        declared = {p.lower(): p for p in parse_param_names(script_text(name))}
        bound: dict[str, Any] = {}
        for key, value in sent.items():
            canonical = declared.get(key.lower())
            if canonical is None:
                raise ScriptFailed(
                    f"A parameter cannot be found that matches parameter name '{key}'.",
                    "NamedParameterNotFound",
                    "InvalidArgument",
                )
            bound[canonical] = value
        return bound

    # -- helpers ---------------------------------------------------------------------------------
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

    def _chain(self, host: str, path: str, attached: bool) -> list[models.VhdInfo]:
        chain: list[models.VhdInfo] = []
        current: str | None = path
        while current and len(chain) < 64:
            info = self._vhd_info(host, current, attached and not chain)
            chain.append(info)
            current = info.parent_path
        return chain

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

    # -- scripts ---------------------------------------------------------------------------------
    def host_facts(self, host: str, p: dict[str, Any]) -> models.HostFacts:
        h = self.estate.host(host)
        return models.HostFacts(
            name=h.name.upper(),
            os_version=h.os_version,
            os_caption=h.os_caption,
            maximum_storage_migrations=h.maximum_storage_migrations,
            virtual_hard_disk_path=h.virtual_hard_disk_path,
            virtual_machine_path=h.virtual_machine_path,
            cluster_name=h.cluster_name,
            cluster_nodes=[
                o.name.upper()
                for o in self.estate.data.hosts
                if h.cluster_name and o.cluster_name == h.cluster_name
            ],
            running_storage_moves=self.engine.running_on(host),
        )

    def _vm_info(self, vm: LabVM) -> models.VMInfo:
        drives = []
        in_chains: set[str] = set()
        for d in vm.drives:
            chain = (
                []
                if d.disk_number is not None or not d.path
                else self._chain(vm.host, d.path, vm.state == "Running")
            )
            in_chains.update(norm(c.path) for c in chain)
            drives.append(
                models.DriveInfo(
                    controller_type=d.controller_type,
                    controller_number=d.controller_number,
                    controller_location=d.controller_location,
                    path=d.path if d.disk_number is None else f"Disk {d.disk_number}",
                    disk_number=d.disk_number,
                    shared=d.shared,
                    chain=chain,
                )
            )
        cp_files = []
        for cp in vm.checkpoints:
            for path in cp.disk_paths:
                if norm(path) not in in_chains:
                    in_chains.add(norm(path))
                    cp_files.append(self._vhd_info(vm.host, path))
        job = self.engine.newest_job(vm.id)
        migrating = job is not None and job.running
        config = self._local(vm.host, vm.config_file())
        return models.VMInfo(
            id=vm.id,
            name=vm.name,
            state=vm.state,  # type: ignore[arg-type]
            path=vm.configuration_location,
            configuration_location=vm.configuration_location,
            snapshot_file_location=vm.snapshot_file_location,
            smart_paging_file_path=vm.smart_paging_file_path,
            primary_status="Ok",
            secondary_status="StorageMigrationPhaseOne" if migrating else None,
            heartbeat="OkApplicationsUnknown" if vm.state == "Running" else None,
            replication_state=vm.replication_state,
            config_bytes=(os.path.getsize(config) if config.exists() else 0)
            * self.estate.settings.size_scale,
            drives=drives,
            checkpoints=[
                models.CheckpointInfo(
                    id=c.id, name=c.name, parent_id=c.parent_id, created=c.created
                )
                for c in vm.checkpoints
            ],
            checkpoint_files=cp_files,
            dvd_paths=list(vm.dvd_paths),
        )

    def inventory(self, host: str, p: dict[str, Any]) -> models.Inventory:
        vm_id = str(p.get("VmId") or "")
        with self.estate.lock:
            vms = [self._vm(host, vm_id)] if vm_id else self.estate.vms_on(host)
            return models.Inventory(host=host.upper(), vms=[self._vm_info(vm) for vm in vms])

    def volume_info(self, host: str, p: dict[str, Any]) -> models.VolumeReport:
        out = []
        free: dict[str, int] = {}  # one walk of each volume per call, however many paths
        paths = _as_list(p.get("Path"))
        if not paths:  # every volume the host has (local and CSV; shares only when named)
            paths = [
                v.root
                for v in self.estate.data.volumes
                if host.lower() in (h.lower() for h in v.hosts) and v.kind != "smb"
            ]
        for path in paths:
            if self._double_hop(host, path):
                # Test-Path says False on "access denied", so the script finds no part of it
                raise ScriptFailed(
                    f"Path '{path}' is not on a volume or share this host can reach (no part "
                    "of it exists)"
                )
            try:
                vol = self.estate.volume_of(host, path)
            except PathError as exc:
                raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None
            if vol.dir not in free:
                free[vol.dir] = self.estate.free_bytes(vol)
            out.append(
                models.VolumeInfo(
                    path=path,
                    exists=self.estate.local(host, path).exists(),
                    volume=vol.root,
                    kind=vol.kind,  # type: ignore[arg-type]
                    file_system=vol.file_system,
                    capacity=vol.capacity,
                    free=free[vol.dir],
                    label=vol.label,
                )
            )
        return models.VolumeReport(volumes=out)

    def odx_status(self, host: str, p: dict[str, Any]) -> models.OdxStatus:
        h = self.estate.host(host)
        try:
            src = self.estate.volume_of(host, str(p.get("SourcePath", "")))
            dst = self.estate.volume_of(host, str(p.get("DestinationPath", "")))
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None
        filters_ok = src.file_system == "NTFS" and dst.file_system == "NTFS"
        same_array = bool(src.array) and src.array == dst.array
        odx = h.odx_os_enabled and filters_ok and src.odx and dst.odx and same_array
        if not h.odx_os_enabled:
            reason = "ODX is disabled on the host (FilterSupportedFeaturesMode = 1)"
        elif not filters_ok:
            reason = "a volume is not NTFS or a filter driver does not support offload"
        elif not (src.odx and dst.odx):
            reason = "a volume's storage does not support ODX"
        elif not same_array:
            reason = "source and destination are on different storage arrays"
        else:
            reason = f"both volumes are on ODX-capable array {src.array}"
        return models.OdxStatus(
            source_volume=src.root,
            destination_volume=dst.root,
            os_enabled=h.odx_os_enabled,
            filters_ok=filters_ok,
            source_array=src.array,
            destination_array=dst.array,
            odx=odx,
            reason=reason,
        )

    def bandwidth(self, host: str, p: dict[str, Any]) -> models.BandwidthProbe:
        dest = str(p.get("DestinationPath", ""))
        size_mib = int(p.get("SizeMiB", 256) or 256)
        if self._double_hop(host, dest):
            raise ScriptFailed(
                f"Access to the path '{dest}' is denied.", "UnauthorizedAccess", "PermissionDenied"
            )
        vol = self._volume(host, dest)
        # like the script: write into the nearest folder that exists, create nothing
        probe_dir = dest
        folder = self._local(host, probe_dir)
        while not folder.is_dir():
            parent = str(PureWindowsPath(probe_dir).parent)
            if parent == probe_dir:
                break
            probe_dir, folder = parent, self._local(host, parent)
        scale = self.estate.settings.size_scale
        logical = size_mib * 1024 * 1024
        real = max(4096, logical // scale)
        if self.estate.free_bytes(vol) < logical:
            raise ScriptFailed(
                "There is not enough space on the disk. (0x80070070)", "IOException", "WriteError"
            )
        name = f"hvmove-probe-{uuid.uuid4().hex}.tmp"
        target = folder / name
        rate = self.estate.bandwidth(vol)
        throttle = self.engine.throttle(vol)
        try:
            t0 = time.perf_counter()
            with open(target, "wb") as fh:
                remaining = real
                while remaining > 0:
                    n = min(1024 * 1024, remaining)
                    fh.write(os.urandom(n))
                    throttle.take(logical * n / real, rate)  # the logical bytes, not the floor
                    remaining -= n
                fh.flush()
                os.fsync(fh.fileno())
            t1 = time.perf_counter()
            with open(target, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    throttle.take(logical * len(chunk) / real, rate)
            t2 = time.perf_counter()
        finally:
            target.unlink(missing_ok=True)
        write_s, read_s = max(t1 - t0, 1e-6), max(t2 - t1, 1e-6)
        return models.BandwidthProbe(
            path=str(PureWindowsPath(probe_dir, name)),
            bytes=logical,
            write_seconds=round(write_s, 4),
            read_seconds=round(read_s, 4),
            write_mbps=round(logical / write_s / 1e6, 1),
            read_mbps=round(logical / read_s / 1e6, 1),
        )

    def _volume(self, host: str, path: str):
        try:
            return self.estate.volume_of(host, path)
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None

    # -- moves -----------------------------------------------------------------------------------
    def start_move(self, host: str, p: dict[str, Any]) -> models.MoveStart:
        with self.estate.lock:
            vm = self._vm(host, p.get("VmId"))
            current = self.engine.newest_job(vm.id)
            if current is not None and current.running:
                return models.MoveStart(
                    vm_id=vm.id,
                    status="already_running",
                    job=current.to_model(),
                    message="a storage migration of this VM is running",
                )
            items, new_paths, warnings = self._plan(vm, p)
            if not items and not new_paths:
                return models.MoveStart(
                    vm_id=vm.id,
                    status="already_at_destination",
                    message="every component already lives at the destination",
                    warnings=warnings,
                )
            h = self.estate.host(host)
            running = self.engine.running_on(host)
            if running >= h.maximum_storage_migrations:
                raise ScriptFailed(
                    f"Failed to perform migration on virtual machine '{vm.name}' because virtual "
                    f"machine migration limit '{h.maximum_storage_migrations}' was reached, please "
                    "wait for completion of an ongoing migration operation.",
                    "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVMStorage",
                    "ResourceBusy",
                )
            for it in items:
                if self._local(host, it.dst).exists():
                    raise ScriptFailed(
                        f"Storage migration for virtual machine '{vm.name}' ({vm.id}) failed: the "
                        f"file '{it.dst}' already exists. (0x80070050)",
                        "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVMStorage",
                        "ResourceExists",
                    )
            job = Job(
                job_id=f"Microsoft:{uuid.uuid4()}".upper(),
                vm_id=vm.id,
                host=host,
                items=items,
                new_paths=new_paths,
                retain=bool(p.get("RetainVhdCopiesOnSource")),
            )
            self.engine.submit(job)
            return models.MoveStart(
                vm_id=vm.id, status="started", job=job.to_model(), warnings=warnings
            )

    def _plan(
        self, vm: LabVM, p: dict[str, Any]
    ) -> tuple[list[CopyItem], dict[str, str], list[str]]:
        """What Move-VMStorage would move for this request: files to copy and new locations."""
        mode = str(p.get("Mode") or "")
        host = vm.host
        warnings: list[str] = []
        vhds_of_vm: dict[str, str] = {}  # norm -> original path, every disk incl. chains
        shared: set[str] = set()
        for d in vm.drives:
            if d.path and d.disk_number is None:
                for info in self._chain(host, d.path, False):
                    vhds_of_vm[norm(info.path)] = info.path
                    if d.shared:
                        shared.add(norm(info.path))
        for cp in vm.checkpoints:
            for path in cp.disk_paths:
                vhds_of_vm.setdefault(norm(path), path)
        mapping: dict[str, str] = {}
        new_paths: dict[str, str] = {}
        if mode == "all":
            dest = str(p.get("DestinationStoragePath") or "")
            self._check_dest(host, dest, "DestinationStoragePath")
            names = [
                PureWindowsPath(o).name.lower() for k, o in vhds_of_vm.items() if k not in shared
            ]
            if len(names) != len(set(names)):
                raise ScriptFailed(
                    "Two disks of the VM have the same file name; mode 'all' would "
                    "put both in one folder. Use mode 'vhds' with a map.",
                    "InvalidArgument",
                    "InvalidArgument",
                )
            for key, original in vhds_of_vm.items():
                if key in shared:
                    warnings.append(
                        f"The virtual hard disk '{original}' is shared and was not moved."
                    )
                    continue
                mapping[key] = str(
                    PureWindowsPath(dest, "Virtual Hard Disks", PureWindowsPath(original).name)
                )
            for comp in ("configuration", "snapshot", "smart_paging"):
                new_paths[comp] = dest
        elif mode in ("components", "vhds"):
            sources = _as_list(p.get("VhdSourcePath"))
            dests = _as_list(p.get("VhdDestinationPath"))
            if len(sources) != len(dests):
                raise ScriptFailed(
                    "VhdSourcePath and VhdDestinationPath must have the same length.",
                    "InvalidArgument",
                    "InvalidArgument",
                )
            for src, dst in zip(sources, dests, strict=True):
                if norm(dst) in vhds_of_vm and norm(src) not in vhds_of_vm:
                    continue  # this pair already moved (a rerun after the switch)
                if norm(src) not in vhds_of_vm:
                    raise ScriptFailed(
                        f"'{src}' is not a virtual hard disk of virtual machine '{vm.name}'.",
                        "InvalidArgument",
                        "InvalidArgument",
                    )
                if norm(src) in shared:
                    raise ScriptFailed(
                        f"The virtual hard disk '{src}' is shared and cannot be moved.",
                        "InvalidOperation",
                        "InvalidOperation",
                    )
                if PureWindowsPath(src).name.lower() != PureWindowsPath(dst).name.lower():
                    raise ScriptFailed(
                        f"The virtual hard disk names must be identical in '{src}' and '{dst}'.",
                        "InvalidArgument",
                        "InvalidArgument",
                    )
                self._check_dest(host, dst, "VhdDestinationPath")
                mapping[norm(src)] = dst
            if mode == "components":
                for comp, key in (
                    ("configuration", "VirtualMachinePath"),
                    ("snapshot", "SnapshotFilePath"),
                    ("smart_paging", "SmartPagingFilePath"),
                ):
                    value = str(p.get(key) or "")
                    if value:
                        self._check_dest(host, value, key)
                        new_paths[comp] = value
                if not sources and not new_paths:
                    raise ScriptFailed(
                        "Mode 'components' needs at least one destination path.",
                        "InvalidArgument",
                        "InvalidArgument",
                    )
            elif not sources:
                raise ScriptFailed(
                    "Mode 'vhds' needs VhdSourcePath and VhdDestinationPath.",
                    "InvalidArgument",
                    "InvalidArgument",
                )
        else:
            raise ScriptFailed(
                f"Cannot validate argument on parameter 'Mode': '{mode}' is not one "
                "of all, components, vhds.",
                "ParameterArgumentValidationError",
                "InvalidData",
            )
        # drop no-op parts: a rerun after the switch asks for what is already true
        mapping = {k: v for k, v in mapping.items() if norm(v) != k}
        current = {
            "configuration": vm.configuration_location,
            "snapshot": vm.snapshot_file_location,
            "smart_paging": vm.smart_paging_file_path,
        }
        new_paths = {k: v for k, v in new_paths.items() if norm(v) != norm(current[k])}
        items: list[CopyItem] = []
        for key, dst in mapping.items():
            src = vhds_of_vm[key]
            parent = self._vhd_info(host, src).parent_path
            parent_dst = mapping.get(norm(parent), parent) if parent else None
            items.append(
                CopyItem(src=src, dst=dst, is_vhd=True, parent_dst=parent_dst if parent else None)
            )
        if "configuration" in new_paths:
            src = vm.config_file()
            items.append(
                CopyItem(
                    src=src,
                    dst=str(
                        PureWindowsPath(
                            new_paths["configuration"], "Virtual Machines", f"{vm.id}.vmcx"
                        )
                    ),
                    is_vhd=False,
                )
            )
        return items, new_paths, warnings

    def _check_dest(self, host: str, path: str, param: str) -> None:
        if not path or not is_absolute_windows(path):
            raise ScriptFailed(
                f"Cannot bind parameter '{param}': '{path}' is not an absolute path.",
                "InvalidArgument",
                "InvalidArgument",
            )
        if self._double_hop(host, path):
            # VMMS opens the share with the remote caller's identity, which it cannot pass on
            raise ScriptFailed(
                f"Failed to create external configuration store at '{path}': General access "
                "denied error ('0x80070005').",
                "AccessDenied",
                "PermissionDenied",
            )
        self._volume(host, path)

    def _double_hop(self, host: str, path: str) -> bool:
        return path.startswith("\\\\") and not self.estate.host(host).smb_delegation

    def move_status(self, host: str, p: dict[str, Any]) -> models.MoveStatus:
        vm = self._vm(host, p.get("VmId"))
        job = self.engine.newest_job(vm.id)
        migrating = job is not None and job.running
        return models.MoveStatus(
            vm_id=vm.id,
            job=job.to_model() if job else None,
            secondary_status="StorageMigrationPhaseOne" if migrating else None,
        )

    def stop_move(self, host: str, p: dict[str, Any]) -> models.MoveStop:
        vm = self._vm(host, p.get("VmId"))
        job = self.engine.newest_job(vm.id)
        if job is None or not job.running:
            return models.MoveStop(
                vm_id=vm.id, requested=False, job=job.to_model() if job else None
            )
        if not job.cancellable:
            return models.MoveStop(
                vm_id=vm.id, requested=False, return_value=32775, job=job.to_model()
            )
        job.cancel.set()
        return models.MoveStop(vm_id=vm.id, requested=True, return_value=4096, job=job.to_model())

    # -- paths, disks, cleanup -------------------------------------------------------------------
    def vm_paths(self, host: str, p: dict[str, Any]) -> models.VMPaths:
        with self.estate.lock:
            vm = self._vm(host, p.get("VmId"))
            job = self.engine.newest_job(vm.id)
            migrating = job is not None and job.running
            return models.VMPaths(
                id=vm.id,
                name=vm.name,
                state=vm.state,  # type: ignore[arg-type]
                configuration_location=vm.configuration_location,
                snapshot_file_location=vm.snapshot_file_location,
                smart_paging_file_path=vm.smart_paging_file_path,
                disk_paths=[d.path for d in vm.drives if d.path and d.disk_number is None],
                checkpoint_disk_paths=[x for cp in vm.checkpoints for x in cp.disk_paths],
                dvd_paths=list(vm.dvd_paths),
                heartbeat="OkApplicationsUnknown" if vm.state == "Running" else None,
                secondary_status="StorageMigrationPhaseOne" if migrating else None,
            )

    def vhd_facts(self, host: str, p: dict[str, Any]) -> models.VhdReport:
        attached = {
            norm(guest_disk(vm) or ""): vm.id
            for vm in self.estate.vms_on(host)
            if vm.state == "Running"
        }
        out = []
        for path in _as_list(p.get("Path")):
            local = self._local(host, path)
            if not local.exists():
                out.append(models.VhdCheck(path=path, exists=False))
                continue
            # a disk in use is read between two guest writes, not in the middle of one
            owner = attached.get(norm(path))
            lock = self.engine.disk_lock(owner) if owner else contextlib.nullcontext()
            with lock:
                problem = vhd.check(local, lambda parent: self._local(host, parent))
            try:
                info = self._vhd_info(host, path, norm(path) in attached)
            except (vhd.VhdCorrupt, ValueError, TypeError) as exc:
                out.append(models.VhdCheck(path=path, exists=True, test_ok=False, error=str(exc)))
                continue
            out.append(
                models.VhdCheck(
                    path=path, exists=True, test_ok=not problem, vhd=info, error=problem
                )
            )
        return models.VhdReport(disks=out)

    def remove_files(self, host: str, p: dict[str, Any]) -> models.RemoveReport:
        report = models.RemoveReport()
        with self.estate.lock:
            files, locations, unread = self._referenced(host)
            for path in _as_list(p.get("Path")):
                if not is_absolute_windows(path):
                    report.refused.append(models.Refusal(path=path, reason="not an absolute path"))
                    continue
                if ref_key(path) in files:
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
                _as_list(p.get("Folder")), key=lambda f: norm(f).count("\\"), reverse=True
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

    def find_references(self, host: str, p: dict[str, Any]) -> models.PathReferences:
        out = models.PathReferences(host=self.estate.host(host).name.upper())
        with self.estate.lock:
            files, locations, unread = self._referenced(host)
            defaults = self._host_defaults(host)
            for path in _as_list(p.get("Path")):
                reason = None
                if not is_absolute_windows(path):
                    reason = "not an absolute path"
                elif ref_key(path) in files:
                    reason = "a virtual machine references this file"
                elif ref_key(path) in defaults:
                    reason = "a default folder of this host"
                elif unread and _is_virtual_disk(path):
                    reason = _maybe_parent(unread)
                if reason:
                    out.files.append(models.Refusal(path=path, reason=reason))
            for folder in _as_list(p.get("Folder")):
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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]
