"""Fill curves: each volume's story (over the threshold, crossing soon, slow, steady) for the data
that is not ours, plus our VMs' bytes wherever they lived that day, so a past move is a step."""

from __future__ import annotations

import random

from hvmove.lab.estate import norm
from hvmove.lab.history.model import THRESHOLD_PCT, VM, Vol, root_of


def vm_bytes_on(
    vol: Vol, vms: list[VM], vols: list[Vol], day: int, last: int, placed: int | None = None
) -> int:
    """Bytes our VMs hold on ``vol`` on ``day``, placed where they were on ``placed`` (default:
    the same day; another day tells disk growth apart from moves)."""
    total = 0
    for vm in vms:
        if not vol.sees(vm.host):
            continue
        here = norm(vm.root_at(day if placed is None else placed)) == norm(vol.root)
        for disk in vm.disks:
            on = here if disk.inside else norm(root_of(disk.rel, vm.host, vols)) == norm(vol.root)
            if on:
                total += vm.size_at(disk, day, last)
        if here:
            total += vm.config_bytes
    return total


def assign_roles(
    vols: list[Vol], vms: list[VM], hosts: list[str], rng: random.Random, last: int
) -> None:
    """Give each volume a fill story. The first host's fullest VM volume ends just over the
    threshold by less than its VMs hold (so a rebalance can fix it), another volume per host
    crosses within weeks, the rest grow slowly or hold steady."""
    for vol in vols:
        vm_pct = 100.0 * vm_bytes_on(vol, vms, vols, last, last) / vol.capacity
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
        load = {v.root: vm_bytes_on(v, vms, vols, last, last) / v.capacity for v in mine}
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


def used_curve(
    vol: Vol, vms: list[VM], vols: list[Vol], days: int, rng: random.Random
) -> list[int]:
    """Other data (everything that is not a VM of ours) follows the volume's story; VMs add their
    own bytes wherever they were that day, so a past move shows as a step."""
    last = days - 1
    vm_end = vm_bytes_on(vol, vms, vols, last, last)
    vm_growth = vm_end - vm_bytes_on(vol, vms, vols, 0, last, placed=last)
    other_end = vol.end_pct / 100 * vol.capacity - vm_end
    # the story's rate is the volume's trend: what today's VMs' disks add is part of it
    other_rate = vol.rate_pct / 100 * vol.capacity - max(0, vm_growth) / max(1, last)
    other_rate = max(other_rate, -0.0005 * vol.capacity)
    curve = []
    for day in range(days):
        other = other_end - other_rate * (last - day)
        if day != last:  # the newest day is exact, so the story's end fill is what the data says
            other += rng.gauss(0, 0.0006 * vol.capacity)
        used = max(0.01 * vol.capacity, other) + vm_bytes_on(vol, vms, vols, day, last)
        curve.append(int(min(used, 0.995 * vol.capacity)))
    return curve
