"""Lab scripts that read the estate: Get-HostFacts, Get-VMInventory, Get-VolumeInfo and
Get-VMStoragePaths."""

from __future__ import annotations

import os
import re
from typing import Any

from hvmove import models
from hvmove.lab.estate import LabVM, PathError, norm
from hvmove.lab.scripts.base import (
    ScriptBase,
    as_list,
    heartbeat,
    script,
    state_name,
    windows_state,
)
from hvmove.lab.wsman import ScriptFailed


class InventoryScripts(ScriptBase):
    @script("Get-HostFacts")
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
            keep_source_supported=h.avoid_removing_vhds,
            keep_source_detail=""
            if h.avoid_removing_vhds
            else "Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property on "
            "this host",
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
                    cp_files.append(self._hvm_vhd(vm.host, path))
        job = self.engine.newest_job(vm.id)
        migrating = job is not None and job.running
        config = self._local(vm.host, vm.config_file())
        return models.VMInfo(
            id=vm.id,
            name=vm.name,
            state=state_name(windows_state(vm))[0],  # type: ignore[arg-type]
            critical=state_name(windows_state(vm))[1],
            path=vm.configuration_location,
            configuration_location=vm.configuration_location,
            snapshot_file_location=vm.snapshot_file_location,
            smart_paging_file_path=vm.smart_paging_file_path,
            primary_status="Ok",
            secondary_status="StorageMigrationPhaseOne" if migrating else None,
            heartbeat=heartbeat(vm),
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

    @script("Get-VMInventory")
    def inventory(self, host: str, p: dict[str, Any]) -> models.Inventory:
        vm_id = str(p.get("VmId") or "")
        with self.estate.lock:
            vms = [self._vm(host, vm_id)] if vm_id else self.estate.vms_on(host)
            return models.Inventory(host=host.upper(), vms=[self._vm_info(vm) for vm in vms])

    @script("Get-VolumeInfo")
    def volume_info(self, host: str, p: dict[str, Any]) -> models.VolumeReport:
        out = []
        free: dict[str, int] = {}  # one walk of each volume per call, however many paths
        paths = as_list(p.get("Path"))
        if not paths:  # every volume the host has (local and CSV; shares only when named)
            paths = [
                v.root
                for v in self.estate.data.volumes
                if host.lower() in (h.lower() for h in v.hosts) and v.kind != "smb"
            ]
        for path in paths:
            # per entry: a path this host cannot resolve is reported with its error
            try:
                out.append(self._volume_entry(host, path, free))
            except ScriptFailed as exc:
                out.append(
                    models.VolumeInfo(
                        path=path,
                        exists=False,
                        volume="",
                        kind="local",
                        file_system="",
                        capacity=0,
                        free=0,
                        error=exc.message,
                    )
                )
        return models.VolumeReport(volumes=out)

    def _volume_entry(self, host: str, path: str, free: dict[str, int]) -> models.VolumeInfo:
        if self._double_hop(host, path):
            # Test-Path writes "Access is denied" (Get-HvmPathState: unreachable)
            raise ScriptFailed(
                f"Path '{path}' cannot be reached from this host: unreachable: Access is denied"
            )
        try:
            vol = self.estate.volume_of(host, path)
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None
        csv = re.match(r"^([A-Za-z]:\\ClusterStorage\\[^\\]+)", path)
        if csv and not norm(vol.root).startswith(norm(csv.group(1))):
            # the nearest existing parent would be C:\ClusterStorage on the system volume
            raise ScriptFailed(
                f"Path '{path}' is on the cluster shared volume '{csv.group(1)}', which is not "
                "mounted on this host"
            )
        if vol.dir not in free:
            free[vol.dir] = self.estate.free_bytes(vol)
        return models.VolumeInfo(
            path=path,
            exists=self.estate.local(host, path).exists(),
            volume=vol.root,
            kind=vol.kind,  # type: ignore[arg-type]
            file_system=vol.file_system,
            capacity=vol.capacity,
            free=free[vol.dir],
            label=vol.label,
        )

    @script("Update-ClusterVmConfig")
    def cluster_refresh(self, host: str, p: dict[str, Any]) -> models.ClusterRefresh:
        """The lab has no cluster resources: a clustered host's refresh succeeds (a fault can make
        it fail), and the lab records it on the VM so that tests see it happened."""
        vm = self._vm(host, p.get("VmId"))
        h = self.estate.host(host)
        if not h.cluster_name:
            return models.ClusterRefresh(
                vm_id=vm.id, clustered=False, updated=False, detail="not a cluster node"
            )
        if self.cluster_refresh_error:
            return models.ClusterRefresh(
                vm_id=vm.id,
                clustered=True,
                updated=False,
                detail=f"Update-ClusterVirtualMachineConfiguration failed: "
                f"{self.cluster_refresh_error}",
            )
        self.cluster_refreshed.append(vm.id)
        return models.ClusterRefresh(
            vm_id=vm.id, clustered=True, updated=True, detail=f"refreshed in {h.cluster_name}"
        )

    @script("Get-VMStoragePaths")
    def vm_paths(self, host: str, p: dict[str, Any]) -> models.VMPaths:
        with self.estate.lock:
            vm = self._vm(host, p.get("VmId"))
            job = self.engine.newest_job(vm.id)
            migrating = job is not None and job.running
            return models.VMPaths(
                id=vm.id,
                name=vm.name,
                state=state_name(windows_state(vm))[0],  # type: ignore[arg-type]
                critical=state_name(windows_state(vm))[1],
                configuration_location=vm.configuration_location,
                snapshot_file_location=vm.snapshot_file_location,
                smart_paging_file_path=vm.smart_paging_file_path,
                disk_paths=[d.path for d in vm.drives if d.path and d.disk_number is None],
                checkpoint_disk_paths=[x for cp in vm.checkpoints for x in cp.disk_paths],
                dvd_paths=list(vm.dvd_paths),
                heartbeat=heartbeat(vm),
                secondary_status="StorageMigrationPhaseOne" if migrating else None,
            )
