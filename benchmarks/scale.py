"""Inventory and prechecks of a large lab estate: wall time and hvmove's own CPU time per VM, at
1,000 and 5,000 VMs.

The lab runs in its own process (as with `hvmove lab up`), so its CPU is not counted; the
orchestrator side is hvmove's own code: `inventory.collect` (one thread per host) and the
prechecks of every VM as `hvmove plan` and the nightly flow run them (`batch.precheck_all`: each
host read once for all its moves, hosts in parallel, then each move's checks in plan order).
`--per-vm` runs instead one `prechecks.run` per VM against the host (seven script calls each,
hosts in parallel), the way a single move's flow prechecks it. Its CPU time is this process's
(``time.process_time``: every thread, user and system). Guest writers are off (a thousand writer
threads would measure the lab, not hvmove).

    python benchmarks/scale.py [--hosts 20] [--vms 1000,5000] [--probe-mib 1] [--per-vm]
                               [--profile out]

Last line: cpu_ms_per_vm_1000=X cpu_ms_per_vm_5000=Y (goal: each <= 10).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvmove import prechecks  # noqa: E402
from hvmove.batch import options_for, precheck_all  # noqa: E402
from hvmove.config import Config, load  # noqa: E402
from hvmove.hyperv.client import open_client  # noqa: E402
from hvmove.inventory import HostInventory, collect  # noqa: E402
from hvmove.lab.build import GiB, add_vm, host_names, new_estate  # noqa: E402
from hvmove.lab.estate import LabSettings  # noqa: E402
from hvmove.lab.process import _wait_ready, write_config  # noqa: E402
from hvmove.models import MoveRequest, VMInfo  # noqa: E402
from hvmove.plans import ResolvedMove  # noqa: E402


def _batched(cfg: Config, inventories: list[HostInventory], probe_mib: int) -> int:
    """The prechecks `hvmove plan` runs: every move of the estate, one batch."""
    moves = [ResolvedMove(_request(h.name, vm, probe_mib), vm) for h in inventories for vm in h.vms]
    return sum(r.ok for r in precheck_all(cfg, moves, reserve=False))


def _per_vm(cfg: Config, inventories: list[HostInventory], probe_mib: int) -> int:
    """One prechecks.run per VM (hosts in parallel, calls on one host in sequence)."""

    def precheck_host(inv: HostInventory) -> int:
        with open_client(cfg, inv.name) as client:
            return sum(
                prechecks.run(
                    client,
                    req := _request(inv.name, vm, probe_mib),
                    options_for(cfg, req),
                    vm_id=vm.id,
                ).report.ok
                for vm in inv.vms
            )

    with ThreadPoolExecutor(len(inventories)) as pool:
        return sum(pool.map(precheck_host, inventories))


def _request(host: str, vm: VMInfo, probe_mib: int) -> MoveRequest:
    return MoveRequest(host=host, vm=vm.id, destination=f"E:\\VMs\\{vm.name}", probe_mib=probe_mib)


def measure(
    hosts: int, vms: int, probe_mib: int, profile: str | None, per_vm: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp)
        t0 = time.perf_counter()
        # 1 MiB per real byte keeps thousands of VMs' disks to a few hundred MB
        estate = new_estate(lab, hosts, LabSettings(size_scale=2**20, guests=False, https=False))
        names = host_names(hosts)
        for i in range(vms):
            add_vm(estate, names[i % hosts], f"vm{i:04d}", disks=[(40 * GiB, 0.5, "Dynamic")])
        estate.save()
        build_s = time.perf_counter() - t0
        server = subprocess.Popen(
            [sys.executable, "-m", "hvmove.lab.server", str(lab)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=lab,
            env={**os.environ},
        )
        try:
            _wait_ready(lab, 300)
            write_config(lab)
            cfg = load(lab / "hvmove.yaml")
            profiler = _profiler(profile)
            cpu0, t0 = time.process_time(), time.perf_counter()
            inventories = collect(cfg)
            inventory_s = time.perf_counter() - t0
            inventory_cpu = time.process_time() - cpu0
            assert not [h for h in inventories if h.error], [h.error for h in inventories]
            count = sum(len(h.vms) for h in inventories)

            cpu1, t1 = time.process_time(), time.perf_counter()
            passed = (_per_vm if per_vm else _batched)(cfg, inventories, probe_mib)
            precheck_s = time.perf_counter() - t1
            precheck_cpu = time.process_time() - cpu1
            if profiler is not None:
                profiler.stop()
                Path(f"{profile}-{vms}.txt").write_text(profiler.output_text(), encoding="utf-8")
            # printed before the lab stops: at 5,000 VMs a loaded machine's lab took more than
            # the 15 s the last session waited for it, and that lost the whole figure
            print(f"lab: {hosts} hosts, {count} VMs (built in {build_s:.1f} s)")
            print(
                f"  inventory of every host (parallel): {inventory_s:.2f} s wall, "
                f"{inventory_cpu:.2f} s hvmove CPU"
            )
            print(
                f"  prechecks of {count} moves ({passed} pass; "
                f"{'per VM' if per_vm else 'batched'}, probe {probe_mib} MiB): "
                f"{precheck_s:.2f} s wall, {precheck_cpu:.2f} s hvmove CPU"
            )
            cpu_ms = (inventory_cpu + precheck_cpu) / count * 1000
            print(f"  hvmove CPU per VM (inventory + prechecks): {cpu_ms:.2f} ms", flush=True)
        finally:
            _stop(server)
    return {"vms": count, "cpu_ms": cpu_ms, "wall_s": inventory_s + precheck_s}


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _profiler(profile: str | None) -> object | None:
    """pyinstrument (a dev tool, not a dependency) of the main thread, where the batched path
    runs each move's checks; `py-spy record --gil -- python benchmarks/scale.py` sees every
    thread."""
    if not profile:
        return None
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="disabled")
    profiler.start()
    return profiler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--vms", default="1000,5000", help="comma-separated estate sizes")
    ap.add_argument("--probe-mib", type=int, default=1)
    ap.add_argument("--per-vm", action="store_true", help="one prechecks.run per VM instead")
    ap.add_argument("--profile", help="write a pyinstrument profile to PROFILE-<vms>.txt")
    args = ap.parse_args()
    results = [
        measure(args.hosts, int(n), args.probe_mib, args.profile, args.per_vm)
        for n in args.vms.split(",")
    ]
    print(" ".join(f"cpu_ms_per_vm_{r['vms']:.0f}={r['cpu_ms']:.2f}" for r in results))


if __name__ == "__main__":
    main()
