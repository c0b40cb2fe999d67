"""What a precheck reads from its host: the calls (``HostReads``) and the paths it asks about.

The checks take any object with ``HostClient``'s read methods: a ``HostClient`` (one move, every
call to the host), or a ``HostSnapshot`` (a batch: the host read once for all its moves,
hvmove.hyperv.prefetch). ``paths_of`` is the one place that says which paths a move's precheck
asks about, so a batch reads up front exactly what the checks will ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Protocol

from hvmove import models
from hvmove.layout import MoveLayout, carried_parents


class HostReads(Protocol):
    @property
    def name(self) -> str: ...

    def host_facts(self) -> models.HostFacts: ...

    def inventory(self, vm_id: str = "") -> models.Inventory: ...

    def move_status(self, vm_id: str) -> models.MoveStatus: ...

    def volumes(self, paths: list[str], *, partial: bool = False) -> models.VolumeReport: ...

    def vhd_facts(self, paths: list[str]) -> models.VhdReport: ...

    def odx(self, source: str, destination: str) -> models.OdxStatus: ...

    def bandwidth(self, destination: str, size_mib: int) -> models.BandwidthProbe: ...


def wanted(plan: MoveLayout) -> list[tuple[str, int]]:
    """Every destination the move writes to, with the bytes it puts there."""
    wants = [(dst, plan.vhd_info[src].file_size) for src, dst in plan.vhds.items()]
    # parents the move may carry beside their child (layout.carried_parents): their bytes too
    wants += [
        (landing, plan.vhd_info[parent].file_size)
        for parent, landing in carried_parents(plan).items()
        if parent in plan.vhd_info
    ]
    if plan.configuration:
        wants.append((plan.configuration, plan.config_bytes))
    wants += [(extra, 0) for extra in (plan.snapshot, plan.smart_paging) if extra]
    return wants


@dataclass(frozen=True)
class Paths:
    wants: list[tuple[str, int]]  # every destination, with the bytes it takes
    source: str  # the first disk moved, else the VM's configuration folder
    destination_files: list[str]  # disk files the move creates, carried parents included
    first_destination: str  # where the first disk (or the configuration) goes

    @property
    def volume_paths(self) -> list[str]:
        """One Get-VolumeInfo for the destinations and, last, the source."""
        return [*(p for p, _ in self.wants), self.source]

    @property
    def probe_folder(self) -> str:
        return str(PureWindowsPath(self.first_destination).parent)


def paths_of(vm: models.VMInfo, plan: MoveLayout) -> Paths:
    return Paths(
        wants=wanted(plan),
        source=next(iter(plan.vhds), vm.configuration_location),
        destination_files=[*plan.vhds.values(), *carried_parents(plan).values()],
        first_destination=next(iter(plan.vhds.values()), plan.configuration or ""),
    )
