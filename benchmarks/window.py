"""Planner makespan against the lower bound and against a per-host FIFO script.

Each estate is generated from a seed: 20 hosts in 5 clusters of 4, 40 volumes (a local D: per
host and 4 CSVs per cluster, half of them on an ODX-capable array), 10 VMs per host with
lognormal sizes, moving to another CSV of their cluster (ODX when both ends share that array).
The window is long enough for everything, so the three numbers are comparable makespans under the
same P90 rates and limits:

- lower bound: the busiest host or volume's work over its slots, or the longest move;
- planner: ``hvmove.planner.plan``;
- FIFO: each host works through its moves in plan order, at most its limit at a time.

    python benchmarks/window.py [--estates 10] [--seed 1]

Last line: makespan/lower_bound=R1 makespan/fifo=R2, each the worst of the estates
(goal: R1 <= 1.05, R2 clearly below 1); the line before it gives the means.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvmove.paths import volume_key  # noqa: E402
from hvmove.planner import (  # noqa: E402
    Limits,
    PlannedMove,
    Throughput,
    VolumeState,
    Window,
    fifo_makespan,
    lower_bound,
    plan,
)

GiB = 1024**3
TiB = 1024**4
MB = 1000**2

HOSTS_PER_CLUSTER = 4
CLUSTERS = 5
CSVS_PER_CLUSTER = 4
VMS_PER_HOST = 10


class Estate:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.volumes: list[VolumeState] = []
        self.moves: list[PlannedMove] = []
        self.host_limits: dict[str, int] = {}
        self.odx_array: dict[str, str | None] = {}
        for c in range(1, CLUSTERS + 1):
            self._cluster(c)
        self.rng.shuffle(self.moves)  # plan files list VMs in no useful order

    def _cluster(self, c: int) -> None:
        csvs = [self._csv(c, n) for n in range(1, CSVS_PER_CLUSTER + 1)]
        for h in range(HOSTS_PER_CLUSTER):
            host = f"hv{(c - 1) * HOSTS_PER_CLUSTER + h + 1:02d}"
            self.host_limits[host] = self.rng.choice([2, 2, 2, 3])  # 2 is the usual default
            local = self._volume(volume_key("D:\\", kind="local", host=host), 4 * TiB, 600, 500)
            self.odx_array[local] = None
            for v in range(VMS_PER_HOST):
                self._vm(host, f"{host}-vm{v:02d}", local, csvs)

    def _csv(self, c: int, n: int) -> str:
        path = f"C:\\ClusterStorage\\Volume{n}\\"
        key = self._volume(volume_key(path, kind="csv", cluster=f"clu{c}"), 40 * TiB)
        # Volume1-2 sit on an ODX-capable array, Volume3-4 on one that is not
        self.odx_array[key] = f"odx{c}" if n <= 2 else None
        return key

    def _volume(
        self, key: str, capacity: int, read_mbps: int = 1400, write_mbps: int = 1200
    ) -> str:
        self.volumes.append(
            VolumeState(
                key=key,
                capacity=capacity,
                free=capacity * 3 // 4,  # room for the whole batch: this compares makespans
                read_bandwidth=read_mbps * MB,
                write_bandwidth=write_mbps * MB,
            )
        )
        return key

    def _vm(self, host: str, vm: str, local: str, csvs: list[str]) -> None:
        rng = self.rng
        source = local if rng.random() < 0.3 else rng.choice(csvs)
        destination = rng.choice([k for k in csvs if k != source])
        size = int(min(max(rng.lognormvariate(0, 0.8) * 150 * GiB, 4 * GiB), 1.5 * TiB))
        odx = (
            self.odx_array[source] is not None
            and self.odx_array[source] == self.odx_array[destination]
        )
        p50 = rng.uniform(1500, 3000) * MB if odx else rng.uniform(250, 450) * MB
        self.moves.append(
            PlannedMove(
                id=vm,
                host=host,
                vm=vm,
                source_volumes=[source],
                destination_volume=destination,
                bytes=size,
                throughput=Throughput(p50=p50, p90=p50 * rng.uniform(0.55, 0.85)),
                odx=odx,
            )
        )

    def limits(self) -> Limits:
        return Limits(hosts=self.host_limits, source_volume=2, destination_volume=2)


def run(seed: int) -> tuple[float, float]:
    estate = Estate(seed)
    limits = estate.limits()
    start = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    window = Window(start=start, end=start + timedelta(days=14))
    began = time.perf_counter()
    schedule = plan(estate.moves, estate.volumes, limits, window, now=start)
    took = time.perf_counter() - began
    if schedule.deferred:
        raise SystemExit(f"seed {seed}: {len(schedule.deferred)} deferred; widen the window")
    bound = lower_bound(estate.moves, estate.volumes, limits)
    fifo = fifo_makespan(estate.moves, estate.volumes, limits)
    makespan = schedule.makespan_seconds
    odx = sum(m.odx for m in estate.moves)
    print(
        f"seed {seed}: {len(estate.moves)} moves ({odx} ODX), "
        f"{sum(m.bytes for m in estate.moves) / TiB:.1f} TiB, "
        f"{len(estate.host_limits)} hosts, {len(estate.volumes)} volumes | "
        f"lower bound {bound / 3600:.2f} h, planner {makespan / 3600:.2f} h, "
        f"fifo {fifo / 3600:.2f} h | planned in {took:.2f} s"
    )
    return makespan / bound, makespan / fifo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estates", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    ratios = [run(seed) for seed in range(args.seed, args.seed + args.estates)]
    r1 = max(r for r, _ in ratios)
    r2 = max(r for _, r in ratios)
    mean1 = statistics.fmean(r for r, _ in ratios)
    mean2 = statistics.fmean(r for _, r in ratios)
    print(
        f"mean of {len(ratios)} estates: makespan/lower_bound={mean1:.3f} makespan/fifo={mean2:.3f}"
    )
    print(f"makespan/lower_bound={r1:.2f} makespan/fifo={r2:.2f}")


if __name__ == "__main__":
    main()
