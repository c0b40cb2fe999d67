"""Lab move-engine copy throughput against a plain file copy of the same bytes on the same disk.

Throttling is off (rate_scale 0), so this measures what the engine itself costs: chunked copy
under the VM's disk lock, percent bookkeeping, space checks, the switch. Runs alternate
in ABBA order after a warm-up and an fsync of everything, and the medians are compared.

    python benchmarks/lab_copy.py [--mib 512] [--runs 5]

Last line: lab_copy/plain_copy=R (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvmove.lab.build import add_vm, new_estate  # noqa: E402
from hvmove.lab.engine import CopyItem, Engine, Job  # noqa: E402
from hvmove.lab.estate import LabSettings  # noqa: E402

GiB = 1024**3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512, help="real size of the disk file")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        lab = Path(tmp)
        # size_scale 64: a 32 GiB virtual disk is a 512 MiB file
        scale = 64
        estate = new_estate(lab, 1, LabSettings(size_scale=scale, rate_scale=0))
        virtual = args.mib * 1024 * 1024 * scale
        vm = add_vm(estate, "hv01", "bench01", state="Off", disks=[(virtual, 1.0, "Fixed")])
        estate.save()
        engine = Engine(estate)
        src = vm.drives[0].path
        assert src is not None
        src_real = estate.local("hv01", src)
        size = src_real.stat().st_size
        engine_s: list[float] = []
        plain_s: list[float] = []

        def engine_run(run: int) -> None:
            dst = f"E:\\bench\\run{run}\\bench01.vhdx"
            job = Job(
                job_id=f"bench-{run}",
                vm_id=vm.id,
                host="hv01",
                items=[CopyItem(src=src, dst=dst, is_vhd=True)],
                new_paths={},
                retain=True,
            )
            os.sync()  # each run starts with no dirty pages of the previous one
            t0 = time.perf_counter()
            engine._run(job)  # the job thread's body, in this thread: no polling delay measured
            engine_s.append(time.perf_counter() - t0)
            assert job.state == "Completed", job.error_description
            vm.drives[0].path = src  # back on the source for the next run
            estate.local("hv01", dst).unlink()

        def plain_run(run: int) -> None:
            plain_dst = lab / "hosts/hv01/E/plain" / f"run{run}.vhdx"
            plain_dst.parent.mkdir(parents=True, exist_ok=True)
            os.sync()
            t0 = time.perf_counter()
            shutil.copyfile(src_real, plain_dst)
            plain_s.append(time.perf_counter() - t0)
            plain_dst.unlink()

        shutil.copyfile(src_real, lab / "warm.tmp")  # warm the page cache for both sides
        (lab / "warm.tmp").unlink()
        for run in range(args.runs):
            # ABBA order, so that neither side always runs right after the other's unlink
            first, second = (engine_run, plain_run) if run % 2 == 0 else (plain_run, engine_run)
            first(run)
            second(run)
        mb = size / 1e6
        e_med, p_med = statistics.median(engine_s), statistics.median(plain_s)
        print(f"file: {size / 2**20:.0f} MiB real, runs: {args.runs}")
        print(
            f"lab engine copy: median {e_med:.3f} s  ({mb / e_med:,.0f} MB/s)  "
            f"runs {[round(x, 3) for x in engine_s]}"
        )
        print(
            f"plain file copy: median {p_med:.3f} s  ({mb / p_med:,.0f} MB/s)  "
            f"runs {[round(x, 3) for x in plain_s]}"
        )
        print(f"lab_copy/plain_copy={p_med / e_med:.2f}")


if __name__ == "__main__":
    main()
