"""Prechecks: read-only, they look at the host and say whether a move can succeed.

Every check says pass, warn or fail, with its numbers and, for a problem, the remedy. Space counts
the whole disk chain plus headroom, and the bytes other moves of the same batch already reserved
on the same volume.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvmove.hyperv.errors import PermanentError
from hvmove.layout import MoveLayout, layout
from hvmove.models import Check, MoveRequest, PrecheckReport, VMInfo
from hvmove.plans import find_vm
from hvmove.prechecks.blockers import blockers
from hvmove.prechecks.common import (
    JOB_STARTING,
    GiB,
    Options,
    OwnAttempt,
    double_hop_remedy,
    duration,
    key_of,
)
from hvmove.prechecks.destinations import destinations
from hvmove.prechecks.host import host_limit, move_path, speed
from hvmove.prechecks.reads import HostReads, Paths, paths_of

__all__ = [
    "JOB_STARTING",
    "GiB",
    "HostReads",
    "Options",
    "Outcome",
    "OwnAttempt",
    "Paths",
    "double_hop_remedy",
    "duration",
    "key_of",
    "paths_of",
    "run",
]


@dataclass
class Outcome:
    report: PrecheckReport
    vm: VMInfo | None = None
    layout: MoveLayout | None = None


def run(
    client: HostReads,
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
    own_job_running = blockers(client, vm, plan, options, ours, add, request.mode)
    destinations(client, vm, plan, options, reserved, ours, report, facts.cluster_name)
    host_limit(facts, add)
    move_path(facts, options, report)
    speed(client, vm, plan, options, report)
    if own_job_running:
        _follow_rather_than_block(report)
    return Outcome(report, vm, plan)


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


def _lookup(client: HostReads, ref: str, vm_id: str | None) -> VMInfo | None:
    if vm_id:
        try:
            found = client.inventory(vm_id).vms
        except PermanentError:
            found = []  # gone, or renamed meanwhile: look it up by name below
        if found:
            return found[0]
    return find_vm(client.inventory().vms, ref)
