"""Past inventory snapshots and moves for the lab, so the capacity notebook has data on any machine.

``generate_history`` writes ``days`` daily snapshots (volumes growing at different rates, one of
them already over 85 % and others crossing soon) and the nightly storage moves of those weeks
(several volume pairs, with and without ODX, a few failures), each with its steps, the precheck's
estimate and progress samples.

The history ends where the estate is now: given a lab estate, its hosts, volumes, VM names, ids
and disk sizes are the real ones and every VM's newest location is where it lives, so a
rebalancing plan computed from this history names VMs and paths the lab has. Past moves are
replayed backwards from there: each move brought its VM to the location it had next, so fill
curves show the step a move makes. Without an estate the hosts, volumes and VMs are synthesised
the way ``hvmove lab up`` would lay them out.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from hvmove import models, throughput
from hvmove.errors import HvmoveError
from hvmove.inventory import HostInventory
from hvmove.lab import vhd
from hvmove.lab.build import NAMES, default_volumes, host_names
from hvmove.lab.estate import Estate, norm
from hvmove.snapshots import record_snapshot, volume_for
from hvmove.store import (
    DiskSnapshot,
    MoveRecord,
    Snapshot,
    StepRecord,
    Store,
    ThroughputSample,
    VMSnapshot,
    VolumeSnapshot,
)

GiB = 1024**3
MB = 1_000_000
THRESHOLD_PCT = 85.0
SOURCE = "lab-history"  # Snapshot.source of generated snapshots
BATCH_PREFIX = "lab-history/"  # MoveRecord.batch of generated moves
ODX_ETA_FACTOR = 4.0  # the estimate's assumed ODX speedup: conservative, so ODX beats its ETA


class HistoryError(HvmoveError, ValueError):
    """The store cannot take a generated history as asked (the CLI prints it as one line)."""


@dataclass
class _Vol:
    root: str
    kind: str
    hosts: list[str]
    capacity: int
    bandwidth_mbps: float
    array: str | None
    odx: bool
    label: str
    role: str = "steady"
    end_pct: float = 50.0
    rate_pct: float = 0.05  # percent of capacity per day

    def sees(self, host: str) -> bool:
        return host.lower() in (h.lower() for h in self.hosts)

    @property
    def key(self) -> str:
        # a local D:\ exists once per host; a share is one volume whoever sees it
        return (
            f"{self.hosts[0].lower()}|{norm(self.root)}"
            if self.kind == "local"
            else norm(self.root)
        )

    @property
    def label_short(self) -> str:
        return f"{self.hosts[0] if self.kind == 'local' else 'shared'} {self.root}"


@dataclass
class _Disk:
    rel: str  # path under the VM's folder ('Virtual Hard Disks\x.vhdx'), or absolute if outside
    inside: bool
    format: str
    type: str
    size: int
    file_end: int  # bytes on disk at the end of the history
    identifier: str
    parent: int | None = None  # index of the parent disk in the VM's disk list


@dataclass
class _VM:
    host: str
    name: str
    id: str
    state: str
    final_location: str
    disks: list[_Disk]
    drives: list[int]  # index of each drive's attached disk in ``disks``
    config_bytes: int
    growth: float  # fraction of the dynamic disks' size added per day
    shared: set[int] = field(default_factory=set)  # drives (positions) that are shared VHDX
    pass_through: list[int] = field(default_factory=list)  # host disk numbers
    dvd_paths: list[str] = field(default_factory=list)  # attached ISOs (they do not move)
    final_root: str = ""  # the volume of final_location, set once the volumes are known
    moves: list[tuple[int, str, str]] = field(default_factory=list)  # (day, from root, to root)

    def root_at(self, day: int) -> str:
        """Where the VM lived on snapshot ``day``: a move on night k shows from snapshot k on."""
        root = self.final_root
        for move_day, source, _ in sorted(self.moves, reverse=True):
            if day < move_day:
                root = source
        return root

    def location_at(self, day: int) -> str:
        root = self.root_at(day)
        if norm(root) == norm(self.final_root):
            return self.final_location
        return folder(root, self.name)

    def size_at(self, disk: _Disk, day: int, last: int) -> int:
        if disk.type == "Fixed":
            return disk.file_end
        rate = self.growth * (3.0 if disk.type == "Differencing" else 1.0)
        return max(int(disk.file_end * 0.2), int(disk.file_end - disk.size * rate * (last - day)))

    def bytes_at(self, day: int, last: int) -> int:
        return sum(self.size_at(d, day, last) for d in self.disks) + self.config_bytes


def folder(root: str, name: str) -> str:
    return root.rstrip("\\") + "\\VMs\\" + name


def _root_of(path: str, host: str, vols: list[_Vol]) -> str:
    return volume_for(path, [v.root for v in vols if v.sees(host)])


# --------------------------------------------------------------------------------------------------
# the estate, real or synthesised
# --------------------------------------------------------------------------------------------------


def _vols_from(lab_volumes: list[Any], hosts: list[str]) -> list[_Vol]:
    wanted = {h.lower() for h in hosts}
    out = []
    for v in lab_volumes:
        seen_by = [h for h in v.hosts if h.lower() in wanted]
        if seen_by:
            out.append(
                _Vol(
                    root=v.root,
                    kind=v.kind,
                    hosts=seen_by,
                    capacity=v.capacity,
                    bandwidth_mbps=v.bandwidth_mbps,
                    array=v.array,
                    odx=v.odx,
                    label=v.label,
                )
            )
    return out


def _from_estate(estate: Estate, hosts: list[str], rng: random.Random) -> list[_VM]:
    scale = estate.settings.size_scale
    wanted = {h.lower() for h in hosts}
    vms = []
    for lab_vm in estate.data.vms:
        if lab_vm.host.lower() not in wanted:
            continue
        disks: list[_Disk] = []
        index: dict[str, int] = {}
        drives: list[int] = []

        def add(
            path: str,
            host: str = lab_vm.host,
            location: str = lab_vm.configuration_location,
            disks: list[_Disk] = disks,
            index: dict[str, int] = index,
        ) -> int:
            if norm(path) in index:
                return index[norm(path)]
            local = estate.local(host, path)
            header = vhd.read_header(local)
            base = norm(location) + "\\"
            inside = norm(path).startswith(base)
            disk = _Disk(
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
            _VM(
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


def _synthesise(hosts: list[str], vols: list[_Vol], rng: random.Random) -> list[_VM]:
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
            disks: list[_Disk] = []
            drives: list[int] = []
            for i in range(rng.choice([1, 1, 2, 3])):
                size = rng.choice([60, 100, 127, 200, 300, 500]) * GiB
                type_ = rng.choice(["Dynamic", "Dynamic", "Fixed"])
                stem = name if i == 0 else f"{name}-data{i}"
                file_end = size if type_ == "Fixed" else int(size * rng.uniform(0.25, 0.8))
                disks.append(
                    _Disk(
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
                    _Disk(
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
                _VM(
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


# --------------------------------------------------------------------------------------------------
# fill curves
# --------------------------------------------------------------------------------------------------


def _vm_bytes_on(
    vol: _Vol, vms: list[_VM], vols: list[_Vol], day: int, last: int, placed: int | None = None
) -> int:
    """Bytes our VMs hold on ``vol`` on ``day``, placed where they were on ``placed`` (default:
    the same day; another day tells disk growth apart from moves)."""
    total = 0
    for vm in vms:
        if not vol.sees(vm.host):
            continue
        here = norm(vm.root_at(day if placed is None else placed)) == norm(vol.root)
        for disk in vm.disks:
            on = here if disk.inside else norm(_root_of(disk.rel, vm.host, vols)) == norm(vol.root)
            if on:
                total += vm.size_at(disk, day, last)
        if here:
            total += vm.config_bytes
    return total


def _assign_roles(
    vols: list[_Vol], vms: list[_VM], hosts: list[str], rng: random.Random, last: int
) -> None:
    """Give each volume a fill story. The first host's fullest VM volume ends just over the
    threshold by less than its VMs hold (so a rebalance can fix it), another volume per host
    crosses within weeks, the rest grow slowly or hold steady."""
    for vol in vols:
        vm_pct = 100.0 * _vm_bytes_on(vol, vms, vols, last, last) / vol.capacity
        if vol.root.upper() == "C:\\":
            vol.role, vol.end_pct, vol.rate_pct = "system", rng.uniform(38, 62), 0.02
        elif vol.kind != "local":
            vol.role, vol.end_pct, vol.rate_pct = "steady", rng.uniform(35, 55), 0.06
        else:
            vol.role, vol.end_pct, vol.rate_pct = "slow", rng.uniform(15, 45), 0.02
        vol.rate_pct *= rng.uniform(0.5, 1.5)
        vol.end_pct = max(vol.end_pct, vm_pct + 3.0)
    for h_index, host in enumerate(hosts):
        mine = [v for v in vols if v.kind == "local" and v.sees(host) and v.root.upper() != "C:\\"]
        if not mine:
            continue
        load = {v.root: _vm_bytes_on(v, vms, vols, last, last) / v.capacity for v in mine}
        mine.sort(key=lambda v: load[v.root], reverse=True)
        rest = mine
        if h_index == 0 and load[mine[0].root] > 0:
            over = mine[0]
            vm_pct = 100.0 * load[over.root]
            # over by less than half of what its VMs hold, so moving some of them fixes it
            over.role = "over"
            over.end_pct = THRESHOLD_PCT + max(0.3, min(2.5, 0.5 * vm_pct - 1.0))
            over.rate_pct = rng.uniform(0.12, 0.25)
            rest = mine[1:]
        if rest:
            soon = rest[0] if h_index == 0 else rng.choice(rest)
            soon.role = "soon"
            soon.rate_pct = rng.uniform(0.2, 0.45)
            soon.end_pct = THRESHOLD_PCT - soon.rate_pct * rng.uniform(12, 40)
            for vol in rest:
                if vol is not soon and rng.random() < 0.5:
                    vol.role, vol.end_pct = "steady", rng.uniform(45, 70)
                    vol.rate_pct = rng.uniform(0.03, 0.12)
                vm_pct = 100.0 * load[vol.root]
                vol.end_pct = max(vol.end_pct, vm_pct + 3.0)


def _used_curve(
    vol: _Vol, vms: list[_VM], vols: list[_Vol], days: int, rng: random.Random
) -> list[int]:
    """Other data (everything that is not a VM of ours) follows the volume's story; VMs add their
    own bytes wherever they were that day, so a past move shows as a step."""
    last = days - 1
    vm_end = _vm_bytes_on(vol, vms, vols, last, last)
    vm_growth = vm_end - _vm_bytes_on(vol, vms, vols, 0, last, placed=last)
    other_end = vol.end_pct / 100 * vol.capacity - vm_end
    # the story's rate is the volume's trend: what today's VMs' disks add is part of it
    other_rate = vol.rate_pct / 100 * vol.capacity - max(0, vm_growth) / max(1, last)
    other_rate = max(other_rate, -0.0005 * vol.capacity)
    curve = []
    for day in range(days):
        other = other_end - other_rate * (last - day)
        if day != last:  # the newest day is exact, so the story's end fill is what the data says
            other += rng.gauss(0, 0.0006 * vol.capacity)
        used = max(0.01 * vol.capacity, other) + _vm_bytes_on(vol, vms, vols, day, last)
        curve.append(int(min(used, 0.995 * vol.capacity)))
    return curve


# --------------------------------------------------------------------------------------------------
# past moves
# --------------------------------------------------------------------------------------------------


def _odx_between(a: _Vol, b: _Vol) -> bool:
    return a.odx and b.odx and a.array is not None and a.array == b.array


def _plan_moves(vms: list[_VM], vols: list[_Vol], days: int, rng: random.Random) -> None:
    """Give VMs past moves, walking back from where they are now: the destination of each move is
    where the VM was next, the source a volume of the same host (ODX partners favoured, so both
    kinds of copy are well represented)."""
    count = max(6, round(days * 0.4))
    events: dict[int, set[int]] = {}
    for _ in range(count * 4):
        if sum(len(d) for d in events.values()) >= count:
            break
        i = rng.randrange(len(vms))
        day = rng.randint(1, days - 1)
        taken = events.setdefault(i, set())
        if all(abs(day - d) >= 3 for d in taken):
            taken.add(day)
    for i, moves_days in events.items():
        vm = vms[i]
        current = vm.final_root
        options = [v for v in vols if v.sees(vm.host)]
        for day in sorted(moves_days, reverse=True):
            dest = next((v for v in options if norm(v.root) == norm(current)), None)
            if dest is None:  # a VM on a volume its host does not report: leave it in place
                break
            # a VM never lived on a volume it would have filled (a 127 GiB system drive)
            size = vm.bytes_at(day, days - 1)
            sources = [v for v in options if v is not dest and size <= 0.25 * v.capacity]
            if not sources:
                continue
            weights = [
                4.0 if _odx_between(v, dest) else 0.3 if v.root.upper() == "C:\\" else 1.0
                for v in sources
            ]
            src = rng.choices(sources, weights=weights)[0]
            vm.moves.append((day, src.root, dest.root))
            current = src.root


@dataclass
class _MoveRow:
    record: MoveRecord
    steps: list[StepRecord]
    samples: list[ThroughputSample]


def _snapshot_time(end: datetime, days: int, day: int) -> datetime:
    return end - timedelta(days=days - 1 - day)


def _move_rows(
    vm: _VM,
    day: int,
    src: _Vol,
    dst: _Vol,
    vms_last: int,
    start: datetime,
    rng: random.Random,
    odx_speedup: float,
    failure: str | None = None,
) -> _MoveRow:
    size = vm.bytes_at(day - 1 if day > 0 else 0, vms_last)
    odx = _odx_between(src, dst)
    base = min(src.bandwidth_mbps, dst.bandwidth_mbps)
    # the same model as the lab's engine and the planner (hvmove.throughput): nominal rate (the
    # slower volume, times the ODX speedup inside one ODX array) times the copy's efficiency
    efficiency = throughput.draw_efficiency(throughput.copy_class(odx), rng)
    actual_mbps = base * (odx_speedup if odx else 1.0) * efficiency
    measured = dst.bandwidth_mbps * rng.uniform(0.85, 1.15)
    estimate_mbps = min(measured, src.bandwidth_mbps) * (ODX_ETA_FACTOR if odx else 1.0)
    estimated = size / (estimate_mbps * MB)
    copy_seconds = size / (actual_mbps * MB)
    # the move that brought the VM home went to the folder it has now
    if norm(dst.root) == norm(vm.final_root):
        destination = vm.final_location
    else:
        destination = folder(dst.root, vm.name)
    move_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    request = {"host": vm.host, "vm": vm.name, "mode": "all", "destination": destination}
    pre_s = rng.uniform(20, 60)
    t = start + timedelta(seconds=pre_s)
    steps = [
        StepRecord(
            move_id=move_id, step="prechecks", state="completed", started_at=start, ended_at=t
        )
    ]
    samples: list[ThroughputSample] = []
    status, reason, last_step, copy_done = "completed", "", "cleanup", copy_seconds
    verified = removed = True
    if failure == "prechecks":
        free = dst.capacity * rng.uniform(0.02, 0.06)
        steps[0].state = "failed"
        steps[0].detail = (
            f"destination space: needs {size * 1.1 / GiB:,.1f} GiB with headroom, "
            f"{free / GiB:,.1f} GiB free"
        )
        status, reason, last_step, copy_done = "failed", f"prechecks: {steps[0].detail}", None, None
        verified = removed = False
    else:
        fail_at = rng.randint(35, 80) if failure == "copy" else None
        share = (fail_at or 100) / 100
        copy_done = copy_seconds * share
        for pct in (10, 25, 50, 75, 100):
            if pct / 100 > share:
                break
            samples.append(
                ThroughputSample(
                    move_id=move_id,
                    at=t + timedelta(seconds=copy_seconds * pct / 100 * rng.uniform(0.97, 1.03)),
                    percent=pct,
                    bytes_done=int(size * pct / 100),
                    mbps=actual_mbps * rng.uniform(0.85, 1.15),
                    concurrent=1,  # one generated move a night: each copy ran alone
                )
            )
        copy_end = t + timedelta(seconds=copy_done)
        if fail_at is not None:
            detail = f"job failed at {fail_at} % (0x80004005): the VM stays on its source"
            steps.append(
                StepRecord(
                    move_id=move_id,
                    step="copy",
                    state="failed",
                    started_at=t,
                    ended_at=copy_end,
                    detail=detail,
                )
            )
            status, reason, last_step = "failed", f"copy: {detail}", "prechecks"
            verified = removed = False
        else:
            steps.append(
                StepRecord(
                    move_id=move_id, step="copy", state="completed", started_at=t, ended_at=copy_end
                )
            )
            t = copy_end
            for step, lo, hi in (("cutover", 3, 15), ("verify", 10, 40), ("cleanup", 2, 20)):
                end = t + timedelta(seconds=rng.uniform(lo, hi))
                steps.append(
                    StepRecord(
                        move_id=move_id, step=step, state="completed", started_at=t, ended_at=end
                    )
                )
                t = end
    finished = steps[-1].ended_at or start
    checks = [
        models.Check(
            name="space",
            status="fail" if failure == "prechecks" else "pass",
            detail="",
            numbers={"bytes_needed": int(size * 1.1)},
        ),
        models.Check(
            name="odx",
            status="pass",
            detail="offload" if odx else "no offload",
            numbers={"odx": odx},
        ),
        models.Check(name="bandwidth", status="pass", detail="", numbers={"mbps": measured}),
    ]
    report = models.PrecheckReport(
        host=vm.host,
        vm=vm.name,
        vm_id=vm.id,
        destination=destination,
        checks=checks,
        bytes_to_copy=size,
        odx=odx,
        mbps=measured,
        eta_seconds=estimated,
    )
    record = MoveRecord(
        id=move_id,
        host=vm.host,
        vm_id=vm.id,
        vm_name=vm.name,
        mode="all",
        destination=destination,
        request=request,
        batch=BATCH_PREFIX + start.date().isoformat(),
        status=status,
        last_step=last_step,
        reason=reason,
        created_at=start - timedelta(seconds=rng.uniform(5, 60)),
        started_at=start,
        finished_at=finished,
        source_volume=src.root,
        destination_volume=dst.root,
        bytes_total=size,
        copy_seconds=copy_done,
        estimated_seconds=estimated,
        measured_mbps=measured,
        odx=odx,
        job_id=None if failure == "prechecks" else str(uuid.UUID(int=rng.getrandbits(128))),
        verified=verified,
        source_removed=removed,
        precheck=report.model_dump(mode="json"),
        verification={"test_vhd": "ok", "facts_equal": True} if verified else None,
        cleanup={"removed": len(vm.disks) + 1} if removed else None,
    )
    return _MoveRow(record, steps, samples)


# --------------------------------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------------------------------


def _host_inventory(
    host: str, vols: list[_Vol], vms: list[_VM], used: dict[str, list[int]], day: int, last: int
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
    infos = [_vm_info(vm, day, last) for vm in vms if vm.host == host]
    return HostInventory(name=host, volumes=volumes, vms=infos)


def _vm_info(vm: _VM, day: int, last: int) -> models.VMInfo:
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


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------


def clear_history(store: Store) -> int:
    """Delete what an earlier ``generate_history`` wrote (and nothing else); returns the number of
    snapshots removed."""
    with store.session() as s:
        snaps = list(s.scalars(select(Snapshot.id).where(Snapshot.source == SOURCE)))
        for table in (VolumeSnapshot, VMSnapshot, DiskSnapshot):
            s.execute(delete(table).where(table.snapshot_id.in_(snaps)))
        s.execute(delete(Snapshot).where(Snapshot.id.in_(snaps)))
        moves = select(MoveRecord.id).where(MoveRecord.batch.like(BATCH_PREFIX + "%"))
        s.execute(delete(ThroughputSample).where(ThroughputSample.move_id.in_(moves)))
        s.execute(delete(StepRecord).where(StepRecord.move_id.in_(moves)))
        s.execute(delete(MoveRecord).where(MoveRecord.batch.like(BATCH_PREFIX + "%")))
    return len(snaps)


def generate_history(
    store_url: str,
    days: int = 60,
    seed: int = 7,
    hosts: list[str] | None = None,
    lab_estate: Estate | None = None,
    *,
    end: datetime | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Fill the store at ``store_url`` with ``days`` daily snapshots ending at ``end`` (default:
    today 06:00 UTC) and the moves of those nights. Refuses a store that already holds generated
    history unless ``replace`` (which deletes that history first, and only that). Returns a
    summary: counts, hosts, the time span, and the volumes over the threshold at the end."""
    if days < 2:
        raise HistoryError("days must be at least 2: a trend needs two snapshots")
    rng = random.Random(seed)
    store = Store(store_url)
    try:
        with store.session() as s:
            earlier = s.scalar(
                select(func.count()).select_from(Snapshot).where(Snapshot.source == SOURCE)
            )
        if earlier and not replace:
            raise HistoryError(
                f"the store already holds {earlier} generated snapshots; pass replace=True "
                "(--replace) to regenerate them"
            )
        if earlier:
            clear_history(store)
        if lab_estate is not None:
            names = hosts or [h.name for h in lab_estate.data.hosts]
            vols = _vols_from(lab_estate.data.volumes, names)
            vms = _from_estate(lab_estate, names, rng)
            odx_speedup = lab_estate.settings.odx_speedup
        else:
            names = hosts or host_names(3)
            vols = _vols_from(default_volumes(names), names)
            vms = _synthesise(names, vols, rng)
            odx_speedup = 8.0
        for vm in vms:
            vm.final_root = _root_of(vm.final_location, vm.host, vols)
        last = days - 1
        end_at = end or datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
        if end_at.tzinfo is None:
            end_at = end_at.replace(tzinfo=UTC)
        if vms:
            _plan_moves(vms, vols, days, rng)
        _assign_roles(vols, vms, names, rng, last)
        used = {vol.key: _used_curve(vol, vms, vols, days, rng) for vol in vols}
        for day in range(days):
            record_snapshot(
                store,
                [_host_inventory(h, vols, vms, used, day, last) for h in names],
                source=SOURCE,
                taken_at=_snapshot_time(end_at, days, day),
            )
        rows = _history_moves(vms, vols, days, end_at, rng, odx_speedup)
        with store.session() as s:
            s.add_all([row.record for row in rows])
            s.flush()  # steps and samples reference the moves
            for row in rows:
                s.add_all(row.steps)
                s.add_all(row.samples)
        return {
            "store_url": store_url,
            "snapshots": days,
            "moves": len(rows),
            "failed_moves": sum(1 for r in rows if r.record.status == "failed"),
            "odx_moves": sum(1 for r in rows if r.record.odx),
            "hosts": names,
            "volumes": len(vols),
            "vms": len(vms),
            "from": _snapshot_time(end_at, days, 0).isoformat(),
            "to": end_at.isoformat(),
            "over_threshold": [
                v.label_short for v in vols if used[v.key][-1] >= THRESHOLD_PCT / 100 * v.capacity
            ],
            "roles": {v.label_short: v.role for v in vols},
        }
    finally:
        store.engine.dispose()


def _history_moves(
    vms: list[_VM],
    vols: list[_Vol],
    days: int,
    end_at: datetime,
    rng: random.Random,
    odx_speedup: float,
) -> list[_MoveRow]:
    """The move records of the planned moves, plus a few that failed (their VM stayed put)."""
    last = days - 1
    events: list[tuple[int, _VM, str, str, str | None]] = [
        (day, vm, src, dst, None) for vm in vms for day, src, dst in vm.moves
    ]
    kinds = ("prechecks", "copy")
    for n in range(max(1, days // 20) if vms else 0):
        vm = rng.choice(vms)
        day = rng.randint(1, last)
        if any(d == day for d, _, _ in vm.moves):
            continue
        here = vm.root_at(day - 1)
        others = [v for v in vols if v.sees(vm.host) and norm(v.root) != norm(here)]
        if others:
            events.append((day, vm, here, rng.choice(others).root, kinds[n % 2]))
    events.sort(key=lambda e: (e[0], e[1].name))
    rows: list[_MoveRow] = []
    next_start: dict[int, datetime] = {}
    for day, vm, src_root, dst_root, failure in events:
        # one batch a night from 22:00, moves one after another
        night = _snapshot_time(end_at, days, day) - timedelta(hours=8)
        start = next_start.get(day, night + timedelta(minutes=rng.uniform(0, 30)))
        src = _vol_by_root(vols, vm.host, src_root)
        dst = _vol_by_root(vols, vm.host, dst_root)
        row = _move_rows(vm, day, src, dst, last, start, rng, odx_speedup, failure)
        rows.append(row)
        next_start[day] = (row.record.finished_at or start) + timedelta(
            seconds=rng.uniform(30, 300)
        )
    return rows


def _vol_by_root(vols: list[_Vol], host: str, root: str) -> _Vol:
    for v in vols:
        if v.sees(host) and norm(v.root) == norm(root):
            return v
    raise KeyError(f"{host} {root}")
