"""Prechecks: read-only, they look at the host and say whether a move can succeed.

Every check says pass, warn or fail, with its numbers and, for a problem, the remedy. Space counts
the whole disk chain plus headroom, and the bytes other moves of the same batch already reserved
on the same volume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PureWindowsPath

from hvmove import models
from hvmove.hyperv.client import HostClient
from hvmove.hyperv.errors import PermanentError, TransientError
from hvmove.layout import MoveLayout, carried_parents, layout, norm
from hvmove.models import Check, MoveRequest, PrecheckReport, VMInfo
from hvmove.paths import volume_key
from hvmove.plans import find_vm

GiB = 1024**3


@dataclass
class Options:
    headroom_percent: float = 10.0
    probe_mib: int = 64
    probe: bool = True
    allow_checkpoints: bool = True
    keep_source: bool = True  # keep_source_until_verified: the WMI path with AvoidRemovingVHDs


# The job id a record holds from just before Start-StorageMove until the host names the job: a
# process that dies in between leaves a move it started but never learned the id of.
JOB_STARTING = "(starting)"


@dataclass
class OwnAttempt:
    """What an earlier attempt of this same move left: its job and destination files are ours."""

    job_id: str | None = None
    destinations: list[str] = field(default_factory=list)


def key_of(host: str, info: models.VolumeInfo, cluster: str | None) -> str:
    """The estate-wide key of a volume this host reported (see hvmove.paths.volume_key)."""
    return volume_key(info.volume, kind=info.kind, host=host, cluster=cluster)


@dataclass
class Outcome:
    report: PrecheckReport
    vm: VMInfo | None = None
    layout: MoveLayout | None = None


def run(
    client: HostClient,
    request: MoveRequest,
    options: Options,
    reserved: dict[str, int] | None = None,
    ours: OwnAttempt | None = None,
    vm_id: str | None = None,
) -> Outcome:
    """All checks of one move. ``vm_id``, when the caller knows it, saves reading every VM of
    the host (a batch prechecks hundreds of VMs)."""
    reserved = reserved or {}
    ours = ours or OwnAttempt()
    report = PrecheckReport(
        host=client.name,
        vm=request.vm,
        mode=request.mode,
        destination=request.destination_summary(),
    )
    add = report.checks.append
    facts = client.host_facts()
    vm = _lookup(client, request.vm, vm_id)
    if vm is None:
        add(
            Check(
                name="vm",
                status="fail",
                detail=f"no VM {request.vm!r} on {client.name}",
                remedy="check the name (hvmove inventory) or use the VM id",
            )
        )
        return Outcome(report)
    report.vm, report.vm_id = vm.name, vm.id
    plan = layout(request, vm)
    files = vm.vhd_files()
    report.virtual_bytes = sum(f.size for f in files if f.attached or f.type != "Differencing")
    if not plan.vhds and not (plan.configuration or plan.snapshot or plan.smart_paging):
        report.already_done = True
        add(
            Check(
                name="destination",
                status="pass",
                detail="every component already lives at the destination; nothing to move",
            )
        )
        return Outcome(report, vm, plan)
    unknown = [src for src in plan.vhds if src not in plan.vhd_info]
    if unknown:
        add(
            Check(
                name="disk",
                status="fail",
                detail=f"not a disk of {vm.name}: {', '.join(unknown)}",
                remedy="list the VM's disks with `hvmove inventory` and use their paths as sources",
            )
        )
        return Outcome(report, vm, plan)
    report.bytes_to_copy = plan.bytes_to_copy
    own_job_running = _blockers(client, vm, plan, options, ours, add, request.mode)
    _destinations(client, vm, plan, options, reserved, ours, report, facts.cluster_name)
    _limit(facts, add)
    _move_path(facts, options, report)
    _speed(client, vm, plan, options, report)
    if own_job_running:
        _follow_rather_than_block(report)
    return Outcome(report, vm, plan)


def _move_path(facts: models.HostFacts, options: Options, report: PrecheckReport) -> None:
    """Which way the move starts, and so what happens to the source. Move-VMStorage deletes the
    source copy of every moved disk at the switch (-RetainVhdCopiesOnSource keeps only parents);
    only the WMI migration with AvoidRemovingVHDs keeps them until hvmove has verified the
    destination, and a host without that property cannot keep them at all."""
    if not options.keep_source:
        report.move_path = "move-vmstorage"
        report.checks.append(
            Check(
                name="source copy",
                status="pass",
                detail="Move-VMStorage: Hyper-V deletes the source copy of each moved disk when "
                "the VM switches, before verification (keep_source_until_verified: false)",
            )
        )
    elif facts.keep_source_supported:
        report.move_path = "wmi"
        report.checks.append(
            Check(
                name="source copy",
                status="pass",
                detail="WMI storage migration with AvoidRemovingVHDs: every source copy is kept "
                "until the destination is verified",
            )
        )
    else:
        report.checks.append(
            Check(
                name="source copy",
                status="fail",
                detail="cannot keep the source until verified on this host: "
                f"{facts.keep_source_detail or 'AvoidRemovingVHDs is not available'}",
                remedy="update the host (AvoidRemovingVHDs came with Windows Server 2016 / "
                "Windows 10 1703), or set keep_source_until_verified: false to move with "
                "Move-VMStorage, which deletes the moved disks' source at the switch",
            )
        )


def _follow_rather_than_block(report: PrecheckReport) -> None:
    """This move's own job is copying on the host: blocking now would leave Hyper-V copying
    with nobody following (and the next run would see "another move running"). What prechecks
    found becomes a warning, and the copy step attaches to the job."""
    for i, c in enumerate(report.checks):
        if c.status == "fail":
            report.checks[i] = c.model_copy(
                update={
                    "status": "warn",
                    "remedy": "this move is already running on the host; hvmove follows it "
                    "to its end" + (f" (otherwise: {c.remedy})" if c.remedy else ""),
                }
            )


def _lookup(client: HostClient, ref: str, vm_id: str | None) -> VMInfo | None:
    if vm_id:
        try:
            found = client.inventory(vm_id).vms
        except PermanentError:
            found = []  # gone, or renamed meanwhile: look it up by name below
        if found:
            return found[0]
    return find_vm(client.inventory().vms, ref)


def _blockers(
    client: HostClient,
    vm: VMInfo,
    plan: MoveLayout,
    options: Options,
    ours: OwnAttempt,
    add,
    mode: str = "all",
) -> bool:
    """Adds the checks that block a move; True when this move's own job is running."""
    own_job_running = _running_move(client, vm, ours, add)
    _disk_blockers(vm, plan, add)
    _vm_blockers(vm, plan, options, add, mode)
    return own_job_running


def _running_move(client: HostClient, vm: VMInfo, ours: OwnAttempt, add) -> bool:
    job = client.move_status(vm.id).job
    if job is not None and job.running:
        if ours.job_id in (job.job_id, JOB_STARTING):
            add(
                Check(
                    name="move running",
                    status="pass",
                    detail=f"this move is already running ({job.percent_complete}%); the copy "
                    "step attaches to it",
                )
            )
            return True
        add(
            Check(
                name="move running",
                status="fail",
                detail=f"another storage move of {vm.name} is running ({job.percent_complete}%)",
                remedy="wait for it to finish or stop it (Stop-StorageMove / cancel in "
                "Hyper-V Manager)",
            )
        )
    elif vm.secondary_status:
        add(
            Check(
                name="vm busy",
                status="fail",
                detail=f"{vm.name} is busy: {vm.secondary_status}",
                remedy="wait for the backup, checkpoint merge or other operation to finish",
            )
        )
    return False


def _disk_blockers(vm: VMInfo, plan: MoveLayout, add) -> None:
    """Disks a storage move cannot take: pass-through, shared, ISOs, two files of one name."""
    passthrough = [d for d in vm.drives if d.pass_through]
    if passthrough:
        add(
            Check(
                name="pass-through disk",
                status="fail",
                detail=f"{len(passthrough)} pass-through disk(s) (disk "
                f"{', '.join(str(d.disk_number) for d in passthrough)}) cannot be moved",
                remedy="convert them to VHDX or detach them before the move",
            )
        )
    shared = [d.path for d in vm.drives if d.shared]
    if shared:
        add(
            Check(
                name="shared VHDX",
                status="fail",
                detail=f"shared disk(s) {', '.join(str(p) for p in shared)} cannot be "
                "storage-migrated (Hyper-V would skip them with only a warning)",
                remedy="move the guest cluster's shared disks with the cluster, not per VM",
            )
        )
    if vm.dvd_paths:
        add(
            Check(
                name="attached ISO",
                status="fail",
                detail=f"ISO attached: {', '.join(vm.dvd_paths)} (ISOs are not moved and can "
                "block the move)",
                remedy="eject it: Set-VMDvdDrive -VMName <vm> -Path $null",
            )
        )
    # parents the move carries along land beside their child: their names count too
    landing = [norm(d) for d in [*plan.vhds.values(), *carried_parents(plan).values()]]
    dupes = sorted({PureWindowsPath(d).name for d in landing if landing.count(d) > 1})
    if dupes:
        add(
            Check(
                name="file names",
                status="fail",
                detail=f"two disks (parents of differencing disks included) named "
                f"{', '.join(dupes)} would land in one folder",
                remedy="use mode 'vhds' with a destination per disk, naming each parent too",
            )
        )


def _vm_blockers(vm: VMInfo, plan: MoveLayout, options: Options, add, mode: str) -> None:
    """The VM's own state: checkpoints, replication, a state a move cannot start from."""
    if vm.checkpoints:
        status = "warn" if options.allow_checkpoints else "fail"
        add(
            Check(
                name="checkpoints",
                status=status,
                detail=f"{len(vm.checkpoints)} checkpoint(s): "
                + (
                    f"the whole chain ({len(plan.vhds)} files) moves with the VM"
                    if mode == "all"
                    else f"this move names {len(plan.vhds)} disk file(s)"
                ),
                remedy="delete or merge checkpoints first to move less"
                if status == "warn"
                else "merge the checkpoints (or set defaults.allow_checkpoints: true)",
                numbers={"checkpoints": len(vm.checkpoints)},
            )
        )
    if vm.replication_state not in ("Disabled", "", None):
        add(
            Check(
                name="replication",
                status="warn",
                detail=f"Hyper-V Replica is {vm.replication_state}; check replication health "
                "after the move",
            )
        )
    if vm.state not in ("Running", "Off", "Saved"):
        add(
            Check(
                name="vm state",
                status="fail",
                detail=f"{vm.name} is {vm.state}",
                remedy="a paused VM may be paused-critical (a full volume): free space, resume",
            )
        )
    elif vm.critical:
        # RunningCritical & co: health not OK, typically storage low - the VMs most worth moving
        add(
            Check(
                name="vm health",
                status="warn",
                detail=f"{vm.name} is {vm.state} but critical (health not OK, e.g. its storage "
                "is low on space)",
            )
        )


def _destinations(
    client: HostClient,
    vm: VMInfo,
    plan: MoveLayout,
    options: Options,
    reserved: dict[str, int],
    ours: OwnAttempt,
    report: PrecheckReport,
    cluster: str | None = None,
) -> None:
    add = report.checks.append
    wants = _wanted(plan)
    source_path = next(iter(plan.vhds), vm.configuration_location)
    try:
        # one call for the destinations and the source: the source's volume is known to exist
        *volumes, source = client.volumes([*(p for p, _ in wants), source_path]).volumes
    except PermanentError as exc:
        add(_unreachable_destination(client.name, exc, [p for p, _ in wants]))
        return
    report.source_volume = key_of(client.name, source, cluster)
    existing = client.vhd_facts([*plan.vhds.values(), *carried_parents(plan).values()]).disks
    own = {norm(p) for p in ours.destinations}
    # an earlier attempt's partial files already take their space from "free": charging the
    # whole move again would block the rerun of a half-copied move by its own copy
    credit = {
        norm(d.path): d.vhd.file_size
        for d in existing
        if d.exists and d.vhd is not None and norm(d.path) in own
    }
    needed: dict[str, int] = defaultdict(int)
    copied: dict[str, int] = defaultdict(int)
    info: dict[str, models.VolumeInfo] = {}
    for (path, size), vol in zip(wants, volumes, strict=True):
        key = key_of(client.name, vol, cluster)
        done = min(size, credit.get(norm(path), 0))
        needed[key] += size - done
        copied[key] += done
        info[key] = vol
    report.needed_by_volume = dict(needed)
    report.destination_volume = next(iter(needed), "")
    growth = sum(
        plan.vhd_info[s].size - plan.vhd_info[s].file_size
        for s in plan.vhds
        if plan.vhd_info[s].type != "Fixed"
    )
    for key, need in needed.items():
        _space(add, key, info[key], need, copied[key], reserved.get(key, 0), growth, options)
    theirs = [d.path for d in existing if d.exists and norm(d.path) not in own]
    if theirs:
        add(
            Check(
                name="destination files",
                status="fail",
                detail=f"already exist: {', '.join(theirs)}",
                remedy="remove them or choose another destination (Move-VMStorage does not "
                "overwrite)",
            )
        )


def _wanted(plan: MoveLayout) -> list[tuple[str, int]]:
    """Every destination the move writes to, with the bytes it puts there."""
    wants = [(dst, plan.vhd_info[src].file_size) for src, dst in plan.vhds.items()]
    if plan.configuration:
        wants.append((plan.configuration, plan.config_bytes))
    wants += [(extra, 0) for extra in (plan.snapshot, plan.smart_paging) if extra]
    return wants


def _unreachable_destination(host: str, exc: PermanentError, paths: list[str]) -> Check:
    # only the shares the host's message names: a typo elsewhere is not a delegation problem
    detail = exc.detail.lower()
    shares = sorted({_share(p) for p in paths if _share(p) and _share(p).lower() in detail})
    return Check(
        name="destination path",
        status="fail",
        detail=exc.detail,
        remedy=double_hop_remedy(host, shares)
        if shares
        else "give a path on a volume or share this host can reach",
    )


def _space(
    add,
    key: str,
    vol: models.VolumeInfo,
    need: int,
    copied: int,
    reserved: int,
    growth: int,
    options: Options,
) -> None:
    """The space check of one destination volume: what is still to copy, against what is free
    less the batch's reservations, keeping the headroom."""
    headroom = int(vol.capacity * options.headroom_percent / 100)
    after = vol.free - need - reserved
    numbers = {
        "key": key,
        "volume": vol.volume,
        "bytes_needed": need,
        "free": vol.free,
        "already_copied": copied,
        "reserved_by_batch": reserved,
        "free_after": after,
        "headroom": headroom,
        "capacity": vol.capacity,
    }
    text = (
        f"{vol.volume} needs {need / GiB:,.1f} GiB"
        + (f" more ({copied / GiB:,.1f} GiB already copied by this move)" if copied else "")
        + f"; {vol.free / GiB:,.1f} GiB free"
        + (f", {reserved / GiB:,.1f} GiB reserved by the batch" if reserved else "")
        + f"; {max(after, 0) / GiB:,.1f} GiB left after the move"
    )
    if after < headroom:
        add(
            Check(
                name="space",
                status="fail",
                detail=f"{text}, below the {options.headroom_percent:g}% headroom "
                f"({headroom / GiB:,.1f} GiB)",
                remedy="pick a volume with more free space, free space, or move fewer VMs "
                "there in this batch",
                numbers=numbers,
            )
        )
        return
    add(Check(name="space", status="pass", detail=text, numbers=numbers))
    if growth and after - growth < 0:
        add(
            Check(
                name="dynamic growth",
                status="warn",
                detail=f"dynamic disks could grow by {growth / GiB:,.1f} GiB, more than "
                f"what {vol.volume} keeps free",
                remedy="watch the volume; a full volume pauses VMs",
                numbers={"growth": growth},
            )
        )


def _limit(facts: models.HostFacts, add) -> None:
    running, limit = facts.running_storage_moves, facts.maximum_storage_migrations
    numbers = {"running": running, "maximum_storage_migrations": limit}
    if limit < 1:
        add(
            Check(
                name="host limit",
                status="fail",
                detail="MaximumStorageMigrations is 0: the host runs no storage moves",
                remedy="Set-VMHost -MaximumStorageMigrations 2",
                numbers=numbers,
            )
        )
    elif running >= limit:
        add(
            Check(
                name="host limit",
                status="warn",
                detail=f"{running} of {limit} storage moves running; this move waits for a slot",
                numbers=numbers,
            )
        )
    else:
        add(
            Check(
                name="host limit",
                status="pass",
                detail=f"{running} of {limit} storage moves running",
                numbers=numbers,
            )
        )


def _speed(
    client: HostClient, vm: VMInfo, plan: MoveLayout, options: Options, report: PrecheckReport
) -> None:
    add = report.checks.append
    dests = list(plan.vhds.values()) or [plan.configuration or ""]
    source = next(iter(plan.vhds), vm.configuration_location)
    try:
        odx = client.odx(source, dests[0])
        report.odx = odx.odx
        add(
            Check(
                name="odx",
                status="pass",
                detail=("copy offloaded to the array (ODX): " if odx.odx else "no ODX: ")
                + odx.reason,
                numbers={"odx": odx.odx},
            )
        )
    except (PermanentError, TransientError) as exc:
        add(Check(name="odx", status="warn", detail=f"could not tell: {exc.detail}"))
    if not options.probe:
        return
    folder = str(PureWindowsPath(dests[0]).parent)
    try:
        probe = client.bandwidth(folder, options.probe_mib)
    except (PermanentError, TransientError) as exc:
        share = _share(folder)
        add(
            Check(
                name="bandwidth",
                status="warn",
                detail=f"probe failed: {exc.detail}",
                remedy="the ETA is unknown; "
                + (
                    double_hop_remedy(client.name, [share])
                    if share and "denied" in exc.detail.lower()
                    else "check the destination is writable"
                ),
            )
        )
        return
    mbps = min(probe.write_mbps, probe.read_mbps)
    report.mbps = mbps
    report.eta_seconds = report.bytes_to_copy / (mbps * 1e6) if mbps > 0 else None
    eta = duration(report.eta_seconds)
    add(
        Check(
            name="bandwidth",
            status="pass",
            detail=f"{mbps:,.0f} MB/s measured at the destination; ETA {eta} for "
            f"{report.bytes_to_copy / GiB:,.1f} GiB"
            + (" (ODX will likely be faster)" if report.odx else ""),
            numbers={
                "mbps": mbps,
                "eta_seconds": report.eta_seconds,
                "probe_mib": options.probe_mib,
            },
        )
    )


def _share(path: str) -> str:
    """'\\\\fs01\\vmstore' for a UNC path, '' for any other."""
    drive = PureWindowsPath(path).drive
    return drive if drive.startswith("\\\\") else ""


def double_hop_remedy(host: str, shares: list[str]) -> str:
    servers = sorted({s.lstrip("\\").split("\\")[0] for s in shares})
    return (
        f"if {', '.join(shares)} is the right share: {host} reaches it for a remote caller only "
        "with Kerberos delegation (the double hop). Configure constrained delegation of the "
        f"host's computer account to {', '.join('cifs/' + s for s in servers)} with 'use any "
        "authentication protocol', or run "
        + "; ".join(f"Enable-SmbDelegation -SmbServer {s} -SmbClient {host}" for s in servers)
        + "; give the host's computer account Full Control on the share and folder; use auth "
        "kerberos or negotiate (NTLM cannot delegate). See the README, 'The double hop'"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
