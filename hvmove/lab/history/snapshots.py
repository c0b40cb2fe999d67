"""The daily inventory snapshots: each host's volumes and VMs as they were on one day, in the
shapes the production inventory records."""

from __future__ import annotations

from hvmove import models
from hvmove.inventory import HostInventory
from hvmove.lab.history.model import VM, Vol


def host_inventory(
    host: str, vols: list[Vol], vms: list[VM], used: dict[str, list[int]], day: int, last: int
) -> HostInventory:
    volumes = [
        models.VolumeInfo(
            path=v.root,
            exists=True,
            volume=v.root,
            kind=v.kind,  # type: ignore[arg-type]
            file_system="NTFS" if v.kind == "local" else "SMB",
            capacity=v.capacity,
            free=v.capacity - used[v.key][day],
            label=v.label,
        )
        for v in vols
        if v.sees(host)
    ]
    infos = [vm_info(vm, day, last) for vm in vms if vm.host == host]
    return HostInventory(name=host, volumes=volumes, vms=infos)


def vm_info(vm: VM, day: int, last: int) -> models.VMInfo:
    location = vm.location_at(day)

    def path_of(i: int) -> str:
        disk = vm.disks[i]
        return location + "\\" + disk.rel if disk.inside else disk.rel

    def info(i: int, attached: bool) -> models.VhdInfo:
        disk = vm.disks[i]
        return models.VhdInfo(
            path=path_of(i),
            format=disk.format,  # type: ignore[arg-type]
            type=disk.type,  # type: ignore[arg-type]
            file_size=vm.size_at(disk, day, last),
            size=disk.size,
            parent_path=path_of(disk.parent) if disk.parent is not None else None,
            disk_identifier=disk.identifier,
            attached=attached,
        )

    drives = []
    for slot, top in enumerate(vm.drives):
        chain = [top]
        while (parent := vm.disks[chain[-1]].parent) is not None and len(chain) < 64:
            chain.append(parent)
        infos = [info(i, attached=n == 0 and vm.state == "Running") for n, i in enumerate(chain)]
        drives.append(
            models.DriveInfo(
                controller_type="SCSI",
                controller_number=0,
                controller_location=slot,
                path=infos[0].path,
                shared=slot in vm.shared,
                chain=infos,
            )
        )
    for number in vm.pass_through:
        drives.append(
            models.DriveInfo(
                controller_type="SCSI",
                controller_number=0,
                controller_location=len(drives),
                path=f"Disk {number}",
                disk_number=number,
            )
        )
    return models.VMInfo(
        id=vm.id,
        name=vm.name,
        state=vm.state,  # type: ignore[arg-type]
        path=location,
        configuration_location=location,
        snapshot_file_location=location,
        smart_paging_file_path=location,
        config_bytes=vm.config_bytes,
        drives=drives,
        dvd_paths=list(vm.dvd_paths),
    )
