"""The checks that block a move before any space is counted: a storage move already running,
disks a storage move cannot take, and the VM's own state."""

from __future__ import annotations

from pathlib import PureWindowsPath

from hvmove.layout import MoveLayout, carried_parents, norm
from hvmove.models import Check, VMInfo
from hvmove.prechecks.common import JOB_STARTING, Add, Options, OwnAttempt
from hvmove.prechecks.reads import HostReads


def blockers(
    client: HostReads,
    vm: VMInfo,
    plan: MoveLayout,
    options: Options,
    ours: OwnAttempt,
    add: Add,
    mode: str = "all",
) -> bool:
    """Adds the checks that block a move; True when this move's own job is running."""
    own_job_running = running_move(client, vm, ours, add)
    disk_blockers(vm, plan, add)
    vm_blockers(vm, plan, options, add, mode)
    return own_job_running


def running_move(client: HostReads, vm: VMInfo, ours: OwnAttempt, add: Add) -> bool:
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


def disk_blockers(vm: VMInfo, plan: MoveLayout, add: Add) -> None:
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
    _unnamed_parents(plan, add)
    # parents the move may carry along land beside their child: their names count too
    landing = [norm(d) for d in [*plan.vhds.values(), *carried_parents(plan).values()]]
    dupes = sorted({PureWindowsPath(d).name for d in landing if landing.count(d) > 1})
    if dupes:
        add(
            Check(
                name="file names",
                status="fail",
                detail=f"two disks (parents of differencing disks included) named "
                f"{', '.join(dupes)} would land in one folder",
                remedy="use mode 'vhds' with a destination folder per disk (a parent no drive or "
                "checkpoint attaches cannot be named: Start-StorageMove refuses an unmanaged VHD)",
            )
        )


def vm_blockers(vm: VMInfo, plan: MoveLayout, options: Options, add, mode: str) -> None:
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


def _unnamed_parents(plan: MoveLayout, add: Add) -> None:
    """Say which assumption the checks take for parents the request does not name: Hyper-V's
    documentation does not say whether they move (layout.carried_parents)."""
    carried = carried_parents(plan)
    if not carried:
        return
    where = ", ".join(f"{parent} (may land as {landing})" for parent, landing in carried.items())
    add(
        Check(
            name="unnamed parents",
            status="warn",
            detail=f"parents of moved differencing disks not named in the request: {where}. "
            "Whether Hyper-V moves them is not documented: checked as if each lands beside its "
            "child (file name, existing file, space), and kept where it is (never cleaned up)",
            remedy="nothing to do when the checks pass; a parent no drive or checkpoint "
            "attaches cannot be named in vhds (Start-StorageMove refuses an unmanaged VHD); a "
            "canary run on the host shows which way Hyper-V goes",
            numbers={"parents": len(carried)},
        )
    )
