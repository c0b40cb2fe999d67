"""The estate the history ends in: the lab's own (its hosts, volumes, VMs, ids and disk sizes),
or one synthesised the way ``hvmove lab up`` would lay it out."""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from typing import Any

from hvmove.lab import vhd
from hvmove.lab.build import NAMES, default_volumes, host_names
from hvmove.lab.estate import Estate, norm
from hvmove.lab.history.model import VM, Disk, GiB, Vol, folder, root_of


@dataclass
class HistoryEstate:
    """Where the history ends: the hosts, their volumes and VMs, and the array's ODX speedup."""

    hosts: list[str]
    vols: list[Vol]
    vms: list[VM]
    odx_speedup: float


def ending_estate(
    hosts: list[str] | None, lab_estate: Estate | None, rng: random.Random
) -> HistoryEstate:
    """The lab's estate when given one (the history then ends where the lab is), else one
    synthesised like ``hvmove lab up``'s; every VM's final volume is known."""
    if lab_estate is not None:
        names = hosts or [h.name for h in lab_estate.data.hosts]
        clusters = {h.name.lower(): h.cluster_name for h in lab_estate.data.hosts}
        # the lab's own clock: a time-scaled lab (rate_scale) copies that much faster, and a
        # history in real-world MB/s beside tonight's scaled probes would tell the planner its
        # arrays are rate_scale times slower than they are (0: unthrottled, keep MB/s)
        scale = lab_estate.settings.rate_scale or 1.0
        vols = vols_from(lab_estate.data.volumes, names, clusters, rate_scale=scale)
        vms = from_estate(lab_estate, names, rng)
        odx_speedup = lab_estate.settings.odx_speedup
    else:
        names = hosts or host_names(3)
        vols = vols_from(default_volumes(names), names)
        vms = synthesise(names, vols, rng)
        odx_speedup = 8.0
    for vm in vms:
        vm.final_root = root_of(vm.final_location, vm.host, vols)
    return HistoryEstate(names, vols, vms, odx_speedup)


def vols_from(
    lab_volumes: list[Any],
    hosts: list[str],
    clusters: dict[str, str | None] | None = None,
    *,
    rate_scale: float = 1.0,
) -> list[Vol]:
    """The volumes the given hosts see; ``clusters``: host (lower case) -> its cluster;
    ``rate_scale``: the lab's, so past copies ran at the rates the lab's copies run at."""
    wanted = {h.lower() for h in hosts}
    clusters = clusters or {}
    out = []
    for v in lab_volumes:
        seen_by = [h for h in v.hosts if h.lower() in wanted]
        if seen_by:
            out.append(
                Vol(
                    root=v.root,
                    kind=v.kind,
                    hosts=seen_by,
                    capacity=v.capacity,
                    bandwidth_mbps=v.bandwidth_mbps * rate_scale,
                    array=v.array,
                    odx=v.odx,
                    label=v.label,
                    cluster=clusters.get(seen_by[0].lower()),
                )
            )
    return out


def from_estate(estate: Estate, hosts: list[str], rng: random.Random) -> list[VM]:
    scale = estate.settings.size_scale
    wanted = {h.lower() for h in hosts}
    vms = []
    for lab_vm in estate.data.vms:
        if lab_vm.host.lower() not in wanted:
            continue
        disks: list[Disk] = []
        index: dict[str, int] = {}
        drives: list[int] = []

        def add(
            path: str,
            host: str = lab_vm.host,
            location: str = lab_vm.configuration_location,
            disks: list[Disk] = disks,
            index: dict[str, int] = index,
        ) -> int:
            if norm(path) in index:
                return index[norm(path)]
            local = estate.local(host, path)
            header = vhd.read_header(local)
            base = norm(location) + "\\"
            inside = norm(path).startswith(base)
            disk = Disk(
                rel=path[len(base) :] if inside else path,
                inside=inside,
                format=header.format,
                type=header.type,
                size=header.size,
                file_end=os.path.getsize(local) * scale,
                identifier=header.disk_identifier,
            )
            disks.append(disk)
            index[norm(path)] = len(disks) - 1
            if header.parent_path:
                disk.parent = add(header.parent_path)
            return index[norm(path)]

        shared: set[int] = set()
        pass_through: list[int] = []
        for d in lab_vm.drives:
            if d.disk_number is not None:
                pass_through.append(d.disk_number)
            elif d.path:
                if d.shared:
                    shared.add(len(drives))
                drives.append(add(d.path))
        config = estate.local(lab_vm.host, lab_vm.config_file())
        vms.append(
            VM(
                host=lab_vm.host,
                name=lab_vm.name,
                id=lab_vm.id,
                state=lab_vm.state,
                final_location=lab_vm.configuration_location,
                disks=disks,
                drives=drives,
                config_bytes=(os.path.getsize(config) if config.exists() else 0) * scale,
                growth=rng.uniform(0.0005, 0.004),
                shared=shared,
                pass_through=pass_through,
                dvd_paths=list(lab_vm.dvd_paths),
            )
        )
    return vms


def synthesise(hosts: list[str], vols: list[Vol], rng: random.Random) -> list[VM]:
    vms = []
    k = 0
    for h_index, host in enumerate(hosts):
        # the first host's D:\ gets most VMs: it is the volume the story needs to be full
        weights = {"D:\\": 4, "E:\\": 2, "F:\\": 2} if h_index == 0 else {"D:\\": 3, "E:\\": 3}
        roots = [v for v in vols if v.sees(host) and v.root != "C:\\"]
        for _ in range(rng.randint(6, 9)):
            name = f"{NAMES[k % len(NAMES)]}{k // len(NAMES) + 1:02d}"
            k += 1
            vol = rng.choices(roots, weights=[weights.get(v.root, 1) for v in roots])[0]
            location = folder(vol.root, name)
            disks: list[Disk] = []
            drives: list[int] = []
            for i in range(rng.choice([1, 1, 2, 3])):
                size = rng.choice([60, 100, 127, 200, 300, 500]) * GiB
                type_ = rng.choice(["Dynamic", "Dynamic", "Fixed"])
                stem = name if i == 0 else f"{name}-data{i}"
                file_end = size if type_ == "Fixed" else int(size * rng.uniform(0.25, 0.8))
                disks.append(
                    Disk(
                        rel=f"Virtual Hard Disks\\{stem}.vhdx",
                        inside=True,
                        format="VHDX",
                        type=type_,
                        size=size,
                        file_end=file_end,
                        identifier=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
                    )
                )
                drives.append(len(disks) - 1)
            if rng.random() < 0.15:  # a checkpoint: the drive now points at the child
                cp = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
                disks.append(
                    Disk(
                        rel=f"Virtual Hard Disks\\{name}_{cp}.avhdx",
                        inside=True,
                        format="VHDX",
                        type="Differencing",
                        size=disks[0].size,
                        file_end=int(disks[0].size * rng.uniform(0.02, 0.08)),
                        identifier=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
                        parent=0,
                    )
                )
                drives[0] = len(disks) - 1
            vms.append(
                VM(
                    host=host,
                    name=name,
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"hvmove-lab/{host}/{name}")),
                    state="Off" if rng.random() < 0.15 else "Running",
                    final_location=location,
                    disks=disks,
                    drives=drives,
                    config_bytes=256 * 4096,
                    growth=rng.uniform(0.0005, 0.004),
                    # every sixth VM has an installation ISO left attached: precheck refuses it
                    dvd_paths=["C:\\ISO\\WindowsServer2022.iso"] if k % 6 == 4 else [],
                )
            )
    return vms
