"""Prechecks of many moves on one host, with the host read once for the batch.

``snapshot`` reads what the prechecks of the given moves will ask (see ``hvmove.hyperv.prefetch``):
the VMs first, then, from each VM's layout, the paths its precheck looks at. The per-VM
precheck (``prechecks.run``) then runs unchanged against the snapshot, which asks the host itself
for anything the batch did not read cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PureWindowsPath

from hvmove import prechecks
from hvmove.hyperv.client import HostClient
from hvmove.hyperv.prefetch import HostSnapshot
from hvmove.layout import carried_parents, layout
from hvmove.models import MoveRequest


@dataclass
class Item:
    request: MoveRequest
    options: prechecks.Options
    vm_id: str


def snapshot(client: HostClient, items: list[Item]) -> HostSnapshot:
    """The host as the prechecks of ``items`` (moves on this host) will read it."""
    snap = HostSnapshot(client)
    vms = snap.read_vms([i.vm_id for i in items])
    volume_paths: list[str] = []
    vhd_paths: list[str] = []
    pairs: list[tuple[str, str]] = []
    probes: list[tuple[str, int]] = []
    for item in items:
        vm = vms.get(item.vm_id.lower())
        if vm is None:
            continue  # its precheck asks the host itself
        reads = planned_reads(item.request, vm)
        volume_paths += [*reads.volume_paths, reads.probe_folder]
        vhd_paths += reads.destination_files
        pairs.append((reads.source, reads.first_destination))
        if item.options.probe:
            probes.append((reads.probe_folder, item.options.probe_mib))
    snap.read_paths(volume_paths, vhd_paths)
    snap.read_odx(pairs)
    snap.probe(probes)
    return snap


@dataclass
class Reads:
    """The paths one move's precheck reads on its host (TEMP: moves into prechecks)."""

    source: str
    first_destination: str
    probe_folder: str
    volume_paths: list[str] = field(default_factory=list)
    destination_files: list[str] = field(default_factory=list)


def planned_reads(request: MoveRequest, vm) -> Reads:
    plan = layout(request, vm)
    source = next(iter(plan.vhds), vm.configuration_location)
    dests = list(plan.vhds.values()) or [plan.configuration or ""]
    return Reads(
        source=source,
        first_destination=dests[0],
        probe_folder=str(PureWindowsPath(dests[0]).parent),
        # the destinations prechecks._wanted lists, then the source
        volume_paths=[
            *plan.vhds.values(),
            *(p for p in (plan.configuration, plan.snapshot, plan.smart_paging) if p),
            source,
        ],
        destination_files=[*plan.vhds.values(), *carried_parents(plan).values()],
    )
