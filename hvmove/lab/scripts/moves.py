"""Lab scripts that start, follow and stop a storage migration: Start-StorageMove,
Get-StorageMoveStatus and Stop-StorageMove."""

from __future__ import annotations

import uuid
from pathlib import PureWindowsPath
from typing import Any

from hvmove import models
from hvmove.lab.engine import CopyItem, Job
from hvmove.lab.estate import LabVM, is_absolute_windows, norm
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.scripts.messages import localized
from hvmove.lab.wsman import ScriptFailed


class MoveScripts(ScriptBase):
    @script("Start-StorageMove")
    def start_move(self, host: str, p: dict[str, Any]) -> models.MoveStart:
        with self.estate.lock:
            vm = self._vm(host, p.get("VmId"))
            method = "wmi" if p.get("KeepSource") else "move-vmstorage"
            current = self.engine.newest_job(vm.id)
            # the script's own refusal of a second move; a lab setting turns it off so that tests
            # prove hvmove's guard (look before starting) rather than the script's
            if current is not None and current.running and self.estate.settings.script_refusals:
                return models.MoveStart(
                    method=method,
                    vm_id=vm.id,
                    status="already_running",
                    job=current.to_model(),
                    message="a storage migration of this VM is running",
                )
            items, new_paths, warnings = self._plan(vm, p)
            if not items and not new_paths:
                return models.MoveStart(
                    method=method,
                    vm_id=vm.id,
                    status="already_at_destination",
                    message="every component already lives at the destination",
                    warnings=warnings,
                )
            h = self.estate.host(host)
            if method == "wmi" and not h.avoid_removing_vhds:
                # a host whose Msvm_VirtualSystemMigrationSettingData lacks the property
                raise ScriptFailed(
                    "Cannot keep the source until verified on this host: "
                    "Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property on "
                    "this host; move with keep_source_until_verified: false (Move-VMStorage "
                    "deletes the moved disks' source at the switch)",
                    "RuntimeException",
                    "OperationStopped",
                )
            running = self.engine.running_on(host)
            if running >= h.maximum_storage_migrations:
                # the script's own refusal (Write-Error -Category ResourceBusy -ErrorId ...)
                raise ScriptFailed(
                    f"Storage migration limit reached on this host: {running} of "
                    f"{h.maximum_storage_migrations} (MaximumStorageMigrations) are running; try "
                    "again when one has finished",
                    "HvmoveMigrationLimit,Invoke-HvmStorageMove",
                    "ResourceBusy",
                )
            if vm.busy:
                # Hyper-V refuses a VM busy with another operation, in the host's language;
                # the record's id and HRESULT (ERROR_INVALID_STATE) are not translated
                raise ScriptFailed(
                    localized(h.ui_culture, "vm_busy", vm=vm.name, id=vm.id),
                    "InvalidState,Microsoft.HyperV.PowerShell.Commands.MoveVMStorage",
                    "InvalidOperation",
                    hresult=0x8007139F,
                )
            for it in items:
                if self._local(host, it.dst).exists():
                    raise ScriptFailed(
                        localized(h.ui_culture, "file_exists", vm=vm.name, id=vm.id, path=it.dst),
                        "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVMStorage",
                        "ResourceExists",
                        hresult=0x80070050,
                    )
            job = Job(
                job_id=f"Microsoft:{uuid.uuid4()}".upper(),
                vm_id=vm.id,
                host=host,
                items=items,
                new_paths=new_paths,
                retain=bool(p.get("RetainVhdCopiesOnSource")),
                avoid_removing=method == "wmi",
            )
            self.engine.submit(job)
            return models.MoveStart(
                vm_id=vm.id,
                status="started",
                job=None if self.start_without_job else job.to_model(),
                warnings=warnings,
                method=method,
            )

    def _plan(
        self, vm: LabVM, p: dict[str, Any]
    ) -> tuple[list[CopyItem], dict[str, str], list[str]]:
        """What Move-VMStorage would move for this request: files to copy and new locations."""
        mode = str(p.get("Mode") or "")
        vhds_of_vm, shared = self._vhds_of(vm)
        warnings: list[str] = []
        if mode == "all":
            mapping, new_paths = self._plan_all(vm, p, vhds_of_vm, shared, warnings)
        elif mode in ("components", "vhds"):
            mapping, new_paths = self._plan_named(vm, p, mode, vhds_of_vm, shared)
        else:
            raise ScriptFailed(
                f"Cannot validate argument on parameter 'Mode': '{mode}' is not one "
                "of all, components, vhds.",
                "ParameterArgumentValidationError",
                "InvalidData",
            )
        mapping, new_paths = _without_no_ops(vm, mapping, new_paths)
        carried: dict[str, str] = {}
        # in every mode (mode all too: _plan_all maps only what the VM attaches), where a parent
        # no drive or checkpoint attaches goes is not documented (move-vmstorage: -Vhds "each
        # individual virtual hard disk to be moved", -RemoveSourceUnmanagedVhds "deletes the
        # parent ... after this cmdlet moves a differencing virtual hard disk"; -DestinationStorage
        # Path names no parents): the premise answers, its source copy stays either way
        if self.estate.settings.premises.unnamed_parents_move_with_child:
            carried = self._carried_parents(vm, mapping, vhds_of_vm)
        items = self._copy_items(vm, vhds_of_vm, {**carried, **mapping}, new_paths)
        for it in items:
            it.unmanaged = norm(it.src) in carried
        return items, new_paths, warnings

    def _carried_parents(
        self, vm: LabVM, mapping: dict[str, str], vhds_of_vm: dict[str, str]
    ) -> dict[str, str]:
        """Premise unnamed_parents_move_with_child: each unnamed parent of a moved disk, up
        its chain, lands in the folder of the child's destination (norm -> destination), the
        reading hvmove.layout.carried_parents checks in the prechecks."""
        out: dict[str, str] = {}
        for key, dst in mapping.items():
            folder = PureWindowsPath(dst).parent
            info = self._vhd_info(vm.host, vhds_of_vm[key])
            seen: set[str] = set()
            while (
                info.parent_path
                and norm(info.parent_path) in vhds_of_vm  # a parent Get-VHD could not read stays
                and norm(info.parent_path) not in {*mapping, *seen}
            ):
                seen.add(norm(info.parent_path))
                landing = str(PureWindowsPath(folder, PureWindowsPath(info.parent_path).name))
                if norm(landing) != norm(info.parent_path):
                    out.setdefault(norm(info.parent_path), landing)
                info = self._vhd_info(vm.host, info.parent_path)
        return out

    def _vhds_of(self, vm: LabVM) -> tuple[dict[str, str], set[str]]:
        """Every disk of the VM, chains and checkpoint disks included (norm -> original path),
        and the norms of the shared ones."""
        vhds_of_vm: dict[str, str] = {}
        shared: set[str] = set()
        for d in vm.drives:
            if d.path and d.disk_number is None:
                for info in self._chain(vm.host, d.path, False):
                    vhds_of_vm[norm(info.path)] = info.path
                    if d.shared:
                        shared.add(norm(info.path))
        for cp in vm.checkpoints:
            for path in cp.disk_paths:
                vhds_of_vm.setdefault(norm(path), path)
        return vhds_of_vm, shared

    def _plan_all(
        self,
        vm: LabVM,
        p: dict[str, Any],
        vhds_of_vm: dict[str, str],
        shared: set[str],
        warnings: list[str],
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Mode 'all': every disk the VM or its checkpoints attach to <destination>\\Virtual Hard
        Disks, the rest to the root. A parent nothing attaches (a golden image) is not the VM's
        own: whether it goes along is the premise unnamed_parents_move_with_child (_plan)."""
        dest = str(p.get("DestinationStoragePath") or "")
        self._check_dest(vm.host, dest, "DestinationStoragePath")
        managed = _managed(vm)
        # the names check keeps every chain member: a carried parent lands there too
        names = [PureWindowsPath(o).name.lower() for k, o in vhds_of_vm.items() if k not in shared]
        if len(names) != len(set(names)):
            raise ScriptFailed(
                "Two disks of the VM have the same file name; mode 'all' would "
                "put both in one folder. Use mode 'vhds' with a map.",
                "InvalidArgument",
                "InvalidArgument",
            )
        mapping: dict[str, str] = {}
        for key, original in vhds_of_vm.items():
            if key not in managed:
                continue
            if key in shared:
                warnings.append(f"The virtual hard disk '{original}' is shared and was not moved.")
                continue
            mapping[key] = str(
                PureWindowsPath(dest, "Virtual Hard Disks", PureWindowsPath(original).name)
            )
        return mapping, {comp: dest for comp in ("configuration", "snapshot", "smart_paging")}

    def _plan_named(
        self,
        vm: LabVM,
        p: dict[str, Any],
        mode: str,
        vhds_of_vm: dict[str, str],
        shared: set[str],
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Modes 'components' and 'vhds': the disks the request names, and in 'components' the
        configuration, checkpoint and smart paging paths it gives."""
        sources = as_list(p.get("VhdSourcePath"))
        mapping = self._named_vhds(
            vm, sources, as_list(p.get("VhdDestinationPath")), vhds_of_vm, shared
        )
        new_paths: dict[str, str] = {}
        if mode == "components":
            for comp, key in (
                ("configuration", "VirtualMachinePath"),
                ("snapshot", "SnapshotFilePath"),
                ("smart_paging", "SmartPagingFilePath"),
            ):
                value = str(p.get(key) or "")
                if value:
                    self._check_dest(vm.host, value, key)
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
        return mapping, new_paths

    def _named_vhds(
        self,
        vm: LabVM,
        sources: list[str],
        dests: list[str],
        vhds_of_vm: dict[str, str],
        shared: set[str],
    ) -> dict[str, str]:
        """The -Vhds map the request gives, checked as the script checks it."""
        if len(sources) != len(dests):
            raise ScriptFailed(
                "VhdSourcePath and VhdDestinationPath must have the same length.",
                "InvalidArgument",
                "InvalidArgument",
            )
        # the script's sources: files attached to the VM's drives or to its checkpoints' drives;
        # any other path (a parent no drive attaches, a typo) "Hyper-V would treat as an
        # unmanaged VHD" (hyperv.md 1.3), so the script refuses it, parents included
        managed = _managed(vm)
        mapping: dict[str, str] = {}
        for src, dst in zip(sources, dests, strict=True):
            if norm(dst) in vhds_of_vm and norm(src) not in vhds_of_vm:
                continue  # this pair already moved (a rerun after the switch)
            if norm(src) not in managed:
                raise ScriptFailed(
                    f"VhdSourcePath '{src}' is not a disk of VM '{vm.name}' or of its "
                    "checkpoints; Hyper-V would treat it as an unmanaged VHD, so it is refused",
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
            self._check_dest(vm.host, dst, "VhdDestinationPath")
            mapping[norm(src)] = dst
        return mapping

    def _copy_items(
        self,
        vm: LabVM,
        vhds_of_vm: dict[str, str],
        mapping: dict[str, str],
        new_paths: dict[str, str],
    ) -> list[CopyItem]:
        """The files the job copies: each mapped disk (with its new parent locator, and whether
        another disk of the move has it as parent) and the configuration file."""
        host = vm.host
        parents = {
            norm(parent)
            for original in vhds_of_vm.values()
            if (parent := self._vhd_info(host, original).parent_path)
        }
        items: list[CopyItem] = []
        for key, dst in mapping.items():
            src = vhds_of_vm[key]
            parent = self._vhd_info(host, src).parent_path
            parent_dst = mapping.get(norm(parent), parent) if parent else None
            items.append(
                CopyItem(
                    src=src,
                    dst=dst,
                    is_vhd=True,
                    parent_dst=parent_dst if parent else None,
                    is_parent=key in parents,
                )
            )
        if "configuration" in new_paths:
            config = PureWindowsPath(
                new_paths["configuration"], "Virtual Machines", f"{vm.id}.vmcx"
            )
            items.append(CopyItem(src=vm.config_file(), dst=str(config), is_vhd=False))
        return items

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

    @script("Get-StorageMoveStatus")
    def move_status(self, host: str, p: dict[str, Any]) -> models.MoveStatus:
        vm = self._vm(host, p.get("VmId"))
        job = self.engine.newest_job(vm.id)
        migrating = job is not None and job.running
        return models.MoveStatus(
            vm_id=vm.id,
            job=job.to_model() if job else None,
            secondary_status="StorageMigrationPhaseOne" if migrating else None,
        )

    @script("Stop-StorageMove")
    def stop_move(self, host: str, p: dict[str, Any]) -> models.MoveStop:
        vm = self._vm(host, p.get("VmId"))
        job = self.engine.newest_job(vm.id)
        if job is None or not job.running:
            return models.MoveStop(
                vm_id=vm.id, requested=False, job=job.to_model() if job else None
            )
        if not job.cancellable or job.refuses_stop:
            # RequestStateChange(4) answers 32775 "Invalid state for this operation" late in a
            # move (return values: learn.microsoft.com/windows/win32/hyperv_v2/
            # requeststatechange-msvm-migrationjob); Cancellable "does not guarantee the cancel
            # succeeds" (msvm-migrationjob). The script reports requested only for 0 / 4096.
            return models.MoveStop(
                vm_id=vm.id, requested=False, return_value=32775, job=job.to_model()
            )
        job.cancel.set()
        return models.MoveStop(vm_id=vm.id, requested=True, return_value=4096, job=job.to_model())


def _without_no_ops(
    vm: LabVM, mapping: dict[str, str], new_paths: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Drop the parts already true: a rerun after the switch asks for them again."""
    mapping = {k: v for k, v in mapping.items() if norm(v) != k}
    current = {
        "configuration": vm.configuration_location,
        "snapshot": vm.snapshot_file_location,
        "smart_paging": vm.smart_paging_file_path,
    }
    return mapping, {k: v for k, v in new_paths.items() if norm(v) != norm(current[k])}


def _managed(vm: LabVM) -> set[str]:
    """The files the VM's drives and its checkpoints' drives attach (norms); a chain parent
    outside this set is an "unmanaged VHD" to Hyper-V (hyperv.md 1.3)."""
    managed = {norm(d.path) for d in vm.drives if d.path and d.disk_number is None}
    return managed | {norm(path) for cp in vm.checkpoints for path in cp.disk_paths}
