"""The demo estate: two hosts, VMs that show what hvmove does and what it refuses."""

from __future__ import annotations

from pathlib import Path

import yaml

from hvmove.lab.build import GiB, add_vm, new_estate
from hvmove.lab.estate import Estate, LabSettings

# (vm, host, destination, expected outcome)
DEMO_MOVES: list[tuple[str, str, str, str]] = [
    ("web01", "hv01", "E:\\VMs\\web01", "completed"),  # running, ODX array D: -> E:
    ("sql01", "hv01", "F:\\VMs\\sql01", "completed"),  # running, two disks, no ODX
    ("app01", "hv01", "E:\\VMs\\app01", "completed"),  # running, a checkpoint chain
    ("iso01", "hv01", "E:\\VMs\\iso01", "blocked"),  # an ISO is attached
    ("file01", "hv02", "\\\\fs01\\vmstore\\file01", "completed"),  # running, to an SMB share
    ("build01", "hv02", "E:\\VMs\\build01", "completed"),  # stopped
    # does not fit F: with its headroom even alone: blocked (space), not deferred every night
    ("bigdata01", "hv02", "F:\\VMs\\bigdata01", "blocked"),
]


def build_demo(lab_dir: Path) -> Estate:
    # rate_scale 10 with a modest ODX speedup: each copy takes seconds, long enough to watch
    estate = new_estate(lab_dir, 2, LabSettings(size_scale=4096, rate_scale=10, odx_speedup=3))
    for vol in estate.data.volumes:
        if vol.root == "F:\\" and vol.hosts == ["hv02"]:
            vol.capacity = 512 * GiB
    add_vm(estate, "hv01", "web01", disks=[(120 * GiB, 1.0, "Fixed")])
    add_vm(estate, "hv01", "sql01", disks=[(30 * GiB, 0.6, "Dynamic"), (20 * GiB, 0.4, "Dynamic")])
    add_vm(estate, "hv01", "app01", disks=[(60 * GiB, 0.5, "Dynamic")], checkpoints=2)
    add_vm(
        estate,
        "hv01",
        "iso01",
        disks=[(40 * GiB, 0.5, "Dynamic")],
        dvd=["D:\\ISO\\WindowsServer2022.iso"],
    )
    add_vm(estate, "hv02", "file01", disks=[(80 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv02", "build01", state="Off", disks=[(40 * GiB, 1.0, "Fixed")])
    add_vm(estate, "hv02", "bigdata01", disks=[(500 * GiB, 1.0, "Fixed")])
    estate.save()
    return estate


def write_demo_plan(path: Path) -> Path:
    moves = [
        {"host": host, "vm": vm, "mode": "all", "destination": dest}
        for vm, host, dest, _ in DEMO_MOVES
    ]
    path.write_text(
        "# The demo's plan: one storage move per VM.\n"
        + yaml.safe_dump({"moves": moves}, sort_keys=False),
        encoding="utf-8",
    )
    return path


def expected_status() -> dict[str, str]:
    return {vm: outcome for vm, _, _, outcome in DEMO_MOVES}
