"""Inventory and prechecks of a large lab estate, hosts in parallel: the time for 1000 VMs.

The lab runs in its own process (as with `hvmove lab up`), 20 hosts with 50 VMs each; the
orchestrator side is hvmove's own code: `inventory.collect` (one thread per host) and one
precheck per VM (hosts in parallel, calls on one host in sequence over its one RunspacePool).
Guest writers are off (a thousand writer threads would measure the lab, not hvmove).

    python benchmarks/scale.py [--hosts 20] [--vms 1000] [--probe-mib 1]
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
from hvmove.config import load  # noqa: E402
from hvmove.hyperv.client import open_client  # noqa: E402
from hvmove.inventory import collect  # noqa: E402
from hvmove.lab.build import GiB, add_vm, host_names, new_estate  # noqa: E402
from hvmove.lab.estate import LabSettings  # noqa: E402
from hvmove.lab.process import _wait_ready, write_config  # noqa: E402
from hvmove.models import MoveRequest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--probe-mib", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp)
        t0 = time.perf_counter()
        # 1 MiB per real byte keeps a thousand VMs' disks to a few hundred MB
        estate = new_estate(
            lab, args.hosts, LabSettings(size_scale=2**20, guests=False, https=False)
        )
        names = host_names(args.hosts)
        for i in range(args.vms):
            add_vm(estate, names[i % args.hosts], f"vm{i:04d}", disks=[(40 * GiB, 0.5, "Dynamic")])
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
            _wait_ready(lab, 120)
            write_config(lab)
            cfg = load(lab / "hvmove.yaml")
            t0 = time.perf_counter()
            hosts = collect(cfg)
            inventory_s = time.perf_counter() - t0
            assert not [h for h in hosts if h.error], [h.error for h in hosts if h.error]
            vms = sum(len(h.vms) for h in hosts)

            def precheck_host(host: str) -> int:
                ok = 0
                with open_client(cfg, host) as client:
                    for vm in next(h for h in hosts if h.name == host).vms:
                        req = MoveRequest(host=host, vm=vm.id, destination=f"E:\\VMs\\{vm.name}")
                        report = prechecks.run(
                            client, req, prechecks.Options(probe_mib=args.probe_mib), vm_id=vm.id
                        ).report
                        ok += report.ok
                return ok

            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(names)) as pool:
                passed = sum(pool.map(precheck_host, names))
            precheck_s = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(15)
    print(f"lab: {args.hosts} hosts, {vms} VMs (built in {build_s:.1f} s)")
    print(f"inventory of every host (parallel): {inventory_s:.2f} s")
    print(
        f"prechecks of {vms} moves ({passed} pass; hosts in parallel, probe "
        f"{args.probe_mib} MiB): {precheck_s:.2f} s, {precheck_s / vms * 1000:.0f} ms per VM"
    )
    print(f"inventory_plus_prechecks_{vms}_vms_s={inventory_s + precheck_s:.1f}")


if __name__ == "__main__":
    main()
