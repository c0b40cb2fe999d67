"""Create a lab estate: hosts with local and shared volumes, VMs with real disk files."""

from __future__ import annotations

import random
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path, PureWindowsPath

from hvmove.lab import vhd
from hvmove.lab.estate import (
    Estate,
    EstateData,
    LabCheckpoint,
    LabDrive,
    LabHost,
    LabSettings,
    LabVM,
    LabVolume,
)

GiB = 1024**3
TiB = 1024**4
NAMES = ["web", "sql", "app", "file", "dc", "build", "mail", "log", "cache", "erp", "crm", "bi"]


def host_names(n: int) -> list[str]:
    return [f"hv{i:02d}" for i in range(1, n + 1)]


def default_volumes(hosts: list[str]) -> list[LabVolume]:
    vols: list[LabVolume] = []
    for h in hosts:
        vols += [
            LabVolume(
                root="C:\\",
                dir=f"hosts/{h}/C",
                hosts=[h],
                capacity=127 * GiB,
                bandwidth_mbps=300,
                label="System",
            ),
            LabVolume(
                root="D:\\",
                dir=f"hosts/{h}/D",
                hosts=[h],
                capacity=2 * TiB,
                bandwidth_mbps=600,
                array="san-a",
                odx=True,
                label="SAN-A LUN 1",
            ),
            LabVolume(
                root="E:\\",
                dir=f"hosts/{h}/E",
                hosts=[h],
                capacity=2 * TiB,
                bandwidth_mbps=600,
                array="san-a",
                odx=True,
                label="SAN-A LUN 2",
            ),
            LabVolume(
                root="F:\\",
                dir=f"hosts/{h}/F",
                hosts=[h],
                capacity=4 * TiB,
                bandwidth_mbps=250,
                array=f"jbod-{h}",
                odx=False,
                label="Local JBOD",
            ),
        ]
    vols.append(
        LabVolume(
            root="\\\\fs01\\vmstore\\",
            dir="shared/fs01-vmstore",
            kind="smb",
            hosts=list(hosts),
            capacity=8 * TiB,
            bandwidth_mbps=400,
            label="fs01 vmstore",
        )
    )
    return vols


def vm_layout(name: str, root: str = "D:\\VMs") -> dict[str, str]:
    base = str(PureWindowsPath(root, name))
    return {
        "configuration_location": base,
        "snapshot_file_location": base,
        "smart_paging_file_path": base,
        "disk_dir": str(PureWindowsPath(base, "Virtual Hard Disks")),
    }


def make_disk(
    estate: Estate,
    host: str,
    path: str,
    *,
    size: int,
    file_size: int,
    type_: str,
    parent: str | None = None,
    seed: str = "",
) -> None:
    scale = estate.settings.size_scale
    real = max(file_size // scale, 2 * vhd.BLOCK)
    blocks = max(2, real // vhd.BLOCK)
    fmt = "VHD" if path.lower().endswith(".vhd") else "VHDX"
    header = vhd.VhdHeader(
        format=fmt,
        type=type_,
        size=size,
        disk_identifier=str(uuid.uuid4()).upper(),
        parent_path=parent,
        blocks=blocks,
    )
    vhd.create(estate.local(host, path), header, fill_seed=seed or path)


def add_vm(
    estate: Estate,
    host: str,
    name: str,
    *,
    state: str = "Running",
    disks: list[tuple[int, float, str]] | None = None,
    checkpoints: int = 0,
    dvd: list[str] | None = None,
    root: str = "D:\\VMs",
    pass_through: bool = False,
    shared_disk: bool = False,
) -> LabVM:
    """disks: (virtual size in bytes, fill fraction, type Fixed|Dynamic) per disk."""
    layout = vm_layout(name, root)
    vm_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hvmove-lab/{host}/{name}"))
    vm = LabVM(
        id=vm_id,
        name=name,
        host=host,
        state=state,
        configuration_location=layout["configuration_location"],
        snapshot_file_location=layout["snapshot_file_location"],
        smart_paging_file_path=layout["smart_paging_file_path"],
        dvd_paths=dvd or [],
    )
    for i, (size, fill, type_) in enumerate(disks or [(40 * GiB, 0.5, "Dynamic")]):
        stem = name if i == 0 else f"{name}-data{i}"
        path = str(PureWindowsPath(layout["disk_dir"], f"{stem}.vhdx"))
        file_size = size if type_ == "Fixed" else int(size * fill)
        make_disk(estate, host, path, size=size, file_size=file_size, type_=type_, seed=path)
        drive = LabDrive(controller_location=i, path=path)
        if i == 0 and checkpoints:
            parent = path
            created = datetime(2026, 11, 1, tzinfo=UTC)
            cp_parent: str | None = None
            for c in range(1, checkpoints + 1):
                cp_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{vm_id}/cp{c}"))
                child = str(PureWindowsPath(layout["disk_dir"], f"{stem}_{cp_id.upper()}.avhdx"))
                make_disk(
                    estate,
                    host,
                    child,
                    size=size,
                    file_size=int(size * 0.05),
                    type_="Differencing",
                    parent=parent,
                    seed=child,
                )
                vm.checkpoints.append(
                    LabCheckpoint(
                        id=cp_id,
                        name=f"{name} - before patch {c}",
                        parent_id=cp_parent,
                        created=(created + timedelta(days=c)).isoformat(),
                        disk_paths=[parent],
                    )
                )
                cp_parent = cp_id
                parent = child
            drive.path = parent
        vm.drives.append(drive)
    if pass_through:
        vm.drives.append(LabDrive(controller_location=len(vm.drives), path=None, disk_number=3))
    if shared_disk:
        path = str(PureWindowsPath(layout["disk_dir"], f"{name}-quorum.vhdx"))
        make_disk(estate, host, path, size=1 * GiB, file_size=1 * GiB, type_="Fixed", seed=path)
        vm.drives.append(LabDrive(controller_location=len(vm.drives), path=path, shared=True))
    config = estate.local(host, vm.config_file())
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_bytes(b"<vmcx lab=1/>".ljust(256, b" "))
    for iso in dvd or []:
        local = estate.local(host, iso)
        local.parent.mkdir(parents=True, exist_ok=True)
        if not local.exists():
            local.write_bytes(b"CD001".ljust(4096, b"\0"))
    estate.data.vms.append(vm)
    return vm


def new_estate(lab_dir: Path, hosts: int, settings: LabSettings | None = None) -> Estate:
    lab_dir.mkdir(parents=True, exist_ok=True)
    names = host_names(hosts)
    data = EstateData(
        settings=settings or LabSettings(),
        hosts=[LabHost(name=h) for h in names],
        volumes=default_volumes(names),
    )
    estate = Estate(lab_dir, data)
    for vol in data.volumes:  # an empty volume still has a root folder
        (lab_dir / vol.dir).mkdir(parents=True, exist_ok=True)
    env = lab_dir / ".env"
    if not env.exists():
        env.write_text(f"HVMOVE_LAB_PASSWORD={secrets.token_urlsafe(18)}\n", encoding="utf-8")
        env.chmod(0o600)
    return estate


def build_default(lab_dir: Path, hosts: int = 2, vms: int = 6, seed: int = 7) -> Estate:
    """A small estate with variety: running and stopped VMs, data disks, one checkpoint chain."""
    estate = new_estate(lab_dir, hosts)
    rng = random.Random(seed)
    names = host_names(hosts)
    for i in range(vms):
        host = names[i % hosts]
        name = f"{NAMES[i % len(NAMES)]}{i // len(NAMES) + 1:02d}"
        size = rng.choice([20, 40, 60, 80, 120]) * GiB
        disks = [(size, rng.uniform(0.3, 0.8), rng.choice(["Dynamic", "Dynamic", "Fixed"]))]
        if rng.random() < 0.3:
            disks.append((rng.choice([50, 100]) * GiB, rng.uniform(0.2, 0.6), "Dynamic"))
        add_vm(
            estate,
            host,
            name,
            state="Off" if i % 5 == 4 else "Running",
            disks=disks,
            checkpoints=2 if i == 2 else 0,
        )
    estate.save()
    return estate
