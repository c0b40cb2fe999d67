"""The migrate-vm flow's wall time against the lab move's own duration, for the same VMs.

Everything that is not the Hyper-V copy job counts as overhead: Prefect (flow and task runs,
artifacts, events), the prechecks (inventory, volumes, ODX, a bandwidth probe), cutover,
verification and cleanup calls over WinRM, and the store. Uses PREFECT_API_URL, or starts the
local Prefect server hvmove uses.

    python benchmarks/overhead.py [--vms 6]

Last line: overhead_per_move_s=X (goal <= 1 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=6)
    ap.add_argument("--probe-mib", type=int, default=16)
    ap.add_argument(
        "--auth", choices=["negotiate", "basic"], default="negotiate", help="how hvmove logs on"
    )
    args = ap.parse_args()
    from hvmove.prefect_local import ensure_server

    ensure_server()  # before Prefect is imported: it reads PREFECT_API_URL once

    from hvmove.config import load
    from hvmove.lab.build import GiB, add_vm, new_estate
    from hvmove.lab.estate import LabSettings
    from hvmove.lab.process import write_config
    from hvmove.lab.server import LabServer

    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp)
        estate = new_estate(lab_dir, 1, LabSettings(size_scale=65536, rate_scale=4, auth=args.auth))
        names = [f"bench{i:02d}" for i in range(args.vms)]
        for name in names:
            add_vm(estate, "hv01", name, disks=[(40 * GiB, 0.5, "Dynamic")])
        estate.save()
        server = LabServer(lab_dir).start()
        write_config(lab_dir)
        try:
            from flows.migrate_vm import migrate_vm

            cfg = load(lab_dir / "hvmove.yaml")
            # one warm-up move: imports, first connections and the first flow run are one-offs
            rows = []
            for i, name in enumerate(["warmup", *names]):
                if name == "warmup":
                    add_vm(server.estate, "hv01", name, disks=[(4 * GiB, 0.5, "Dynamic")])
                    server.estate.save()
                    server.engine.start_guests()
                t0 = time.perf_counter()
                state = migrate_vm(
                    host="hv01",
                    vm=name,
                    destination=f"E:\\VMs\\{name}",
                    config=str(cfg.path),
                    probe_mib=args.probe_mib,
                    poll_seconds=0.2,
                    return_state=True,
                )
                wall = time.perf_counter() - t0
                assert state.is_completed(), state.message
                vm_id = next(v.id for v in server.estate.data.vms if v.name == name)
                job = server.engine.jobs_of(vm_id)[0]
                move_s = (job.ended or time.time()) - job.started
                if i:
                    rows.append((name, wall, move_s))
            steps = _step_seconds(cfg.store_url(), names)
        finally:
            server.stop()
    for name, wall, move_s in rows:
        print(
            f"{name}: flow {wall:6.2f} s  lab move {move_s:6.2f} s  overhead {wall - move_s:5.2f} s"
        )
    print(
        f"mean flow {statistics.mean(r[1] for r in rows):.2f} s, mean lab move "
        f"{statistics.mean(r[2] for r in rows):.2f} s over {len(rows)} moves"
    )
    print(
        "mean step time (store): "
        + ", ".join(f"{step} {statistics.mean(v):.2f} s" for step, v in steps.items())
    )
    overhead = statistics.mean(r[1] - r[2] for r in rows)
    print(f"overhead_per_move_s={overhead:.2f}")


def _step_seconds(store_url: str, names: list[str]) -> dict[str, list[float]]:
    """Each step's duration as the store recorded it, to show where the overhead goes."""
    from hvmove.store import Store

    out: dict[str, list[float]] = {}
    for record in Store(store_url).moves():
        if record.vm_name not in names:
            continue
        for step in record.steps:
            if step.ended_at is not None:
                seconds = (step.ended_at - step.started_at).total_seconds()
                out.setdefault(step.step, []).append(seconds)
    return out


if __name__ == "__main__":
    main()
