"""Prechecks of many moves on one host, with the host read once for the batch.

``snapshot`` reads what the prechecks of the given moves will ask (hvmove.hyperv.prefetch): the
VMs first, then, from each VM's layout, the paths its precheck looks at (``paths_of``, the same
function the checks use). The per-VM checks (``hvmove.prechecks.run``) then run unchanged against
the snapshot, which asks the host itself for anything the batch did not read cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvmove.hyperv.client import HostClient
from hvmove.hyperv.prefetch import HostSnapshot, SharedProbes
from hvmove.layout import layout
from hvmove.models import MoveRequest
from hvmove.prechecks.common import Options
from hvmove.prechecks.reads import paths_of


@dataclass
class Item:
    request: MoveRequest
    options: Options
    vm_id: str


def snapshot(
    client: HostClient, items: list[Item], shared: SharedProbes | None = None
) -> HostSnapshot:
    """The host as the prechecks of ``items`` (moves on this host) will read it; ``shared``:
    the batch's probes of volumes other hosts see too."""
    snap = HostSnapshot(client, shared)
    vms = snap.read_vms([i.vm_id for i in items])
    volume_paths: list[str] = []
    vhd_paths: list[str] = []
    pairs: list[tuple[str, str]] = []
    probes: list[tuple[str, int]] = []
    for item in items:
        vm = vms.get(item.vm_id.lower())
        if vm is None:
            continue  # its precheck asks the host itself
        paths = paths_of(vm, layout(item.request, vm))
        # the probe's folder too: its volume says which probe it shares
        volume_paths += [*paths.volume_paths, paths.probe_folder]
        vhd_paths += paths.destination_files
        pairs.append((paths.source, paths.first_destination))
        if item.options.probe:
            probes.append((paths.probe_folder, item.options.probe_mib))
    snap.read_paths(volume_paths, vhd_paths)
    snap.read_odx(pairs)
    snap.probe(probes)
    return snap
