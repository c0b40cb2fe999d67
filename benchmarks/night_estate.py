"""The estate of ``benchmarks/night.py`` and the offline upper bound on what a night can move.

Generated from a seed: 8 hosts (two 3-node clusters and two standalone hosts), 24 volumes (a
local D: and E: per host; 3 CSVs on cluster 1 and 4 on cluster 2, each cluster with one ODX array
of two CSVs and one array without ODX; one SMB share every host sees) and 80 VMs with lognormal
(skewed) sizes, each moving to another volume its host sees. Sizes are scaled so that moving
everything takes about twice the window under the lab's own bandwidth model.

Lab rates are a real night sped up: volumes have real-world bandwidths (MB/s) and ``rate_scale``
makes an 8-hour night last ``minutes``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from hvmove import throughput
from hvmove.lab import bandwidth
from hvmove.lab.build import GiB, TiB, add_vm, new_estate
from hvmove.lab.estate import Estate, LabHost, LabSettings, LabVolume

REAL_NIGHT_S = 8 * 3600
HOSTS = [f"hv{i:02d}" for i in range(1, 9)]
CLUSTERS = {"clu1": HOSTS[0:3], "clu2": HOSTS[3:6]}
VMS = 80


@dataclass(frozen=True)
class Move:
    host: str
    vm: str
    vm_id: str
    destination: str  # folder
    bytes: int


def _volumes() -> list[LabVolume]:
    vols: list[LabVolume] = []
    for h in HOSTS:
        for root, bw in (("D:\\", 450.0), ("E:\\", 300.0)):
            vols.append(
                LabVolume(
                    root=root,
                    dir=f"hosts/{h}/{root[0]}",
                    hosts=[h],
                    capacity=40 * TiB,
                    bandwidth_mbps=bw,
                    label=f"{h} local {root[0]}",
                )
            )
    layout = {"clu1": [("odx", 850.0), ("odx", 850.0), ("plain", 550.0)]}
    layout["clu2"] = [("odx", 800.0), ("odx", 800.0), ("plain", 500.0), ("plain", 500.0)]
    for cluster, specs in layout.items():
        for n, (kind, bw) in enumerate(specs, start=1):
            vols.append(
                LabVolume(
                    root=f"C:\\ClusterStorage\\Volume{n}\\",
                    dir=f"shared/{cluster}-Volume{n}",
                    kind="csv",
                    hosts=CLUSTERS[cluster],
                    capacity=200 * TiB,
                    bandwidth_mbps=bw,
                    array=f"{cluster}-{kind}",
                    odx=kind == "odx",
                    label=f"{cluster} CSV {n}",
                )
            )
    vols.append(
        LabVolume(
            root="\\\\fs01\\vmstore\\",
            dir="shared/fs01-vmstore",
            kind="smb",
            hosts=list(HOSTS),
            capacity=200 * TiB,
            bandwidth_mbps=350.0,
            label="fs01 vmstore",
        )
    )
    return vols


def _sees(vol: LabVolume, host: str) -> bool:
    return host in vol.hosts


def _pick_route(rng: random.Random, host: str, vols: list[LabVolume]) -> tuple[LabVolume, ...]:
    mine = [v for v in vols if _sees(v, host)]
    homes = [v for v in mine if v.kind != "smb"]
    home = rng.choice(homes)
    others = [v for v in mine if v is not home]
    weights = [4.0 if (home.odx and v.odx and home.array == v.array) else 1.0 for v in others]
    return home, rng.choices(others, weights=weights)[0]


def _resources(
    estate: Estate, moves: list[tuple[str, LabVolume, LabVolume]]
) -> tuple[list[throughput.Copy], dict[str, float]]:
    """Each move's demand and resources under the lab's model (efficiency included)."""
    fabric = bandwidth.Fabric(estate)
    caps = fabric.capacity()
    for vm_id, src, dst in moves:
        eff = bandwidth.efficiency(estate, vm_id, src, dst, 0)
        fabric.flows[vm_id] = bandwidth._Flow(src, dst, bandwidth.odx_array(src, dst), eff)
    return fabric.copies(caps), caps


def build(lab_dir: Path, seed: int, minutes: float, hosts_limit: int) -> tuple[Estate, list[Move]]:
    """A seeded estate in ``lab_dir`` whose full move list takes about twice the window."""
    rng = random.Random(seed)
    window_s = minutes * 60
    rate_scale = REAL_NIGHT_S / window_s
    settings = LabSettings(
        size_scale=2**20,  # 128 GiB (2 VHD blocks) per 128 KiB on disk
        rate_scale=rate_scale,
        guests=False,  # 80 writer threads would measure the lab, not the night
        https=False,
        auth="basic",
        job_retention_s=3600,
        efficiency_seed=seed,
    )
    estate = new_estate(lab_dir, 0, settings)
    estate.data.hosts = [
        LabHost(
            name=h,
            maximum_storage_migrations=hosts_limit,
            cluster_name=next((c for c, hs in CLUSTERS.items() if h in hs), None),
        )
        for h in HOSTS
    ]
    estate.data.volumes = _volumes()
    for vol in estate.data.volumes:
        (lab_dir / vol.dir).mkdir(parents=True, exist_ok=True)
    # skewed sizes: lognormal, a few very large VMs and many small ones
    raw = [(HOSTS[i % len(HOSTS)], rng.lognormvariate(0, 1.0)) for i in range(VMS)]
    routes = [(h, *_pick_route(rng, h, estate.data.volumes)) for h, _ in raw]
    probe = [
        (f"{i}", src, dst) for i, (_h, src, dst) in enumerate(routes)
    ]  # ids only for the sizing pass
    copies, caps = _resources(estate, probe)
    unit = _unit_for(copies, caps, [w for _, w in raw], window_s)
    moves: list[Move] = []
    for i, ((host, weight), (_h, src, dst)) in enumerate(zip(raw, routes, strict=True)):
        name = f"vm{i:02d}-{rng.choice(['web', 'sql', 'app', 'file', 'erp'])}"
        size = max(128 * GiB, int(weight * unit))
        vm = add_vm(
            estate,
            host,
            name,
            state="Running",
            disks=[(size, 1.0, "Fixed")],
            root=str(PureWindowsPath(src.root, "VMs")),
        )
        moves.append(Move(host, name, vm.id, str(PureWindowsPath(dst.root, "VMs", name)), size))
    estate.save()
    rng.shuffle(moves)  # plan files list VMs in no useful order
    return estate, moves


def _unit_for(
    copies: list[throughput.Copy], caps: dict[str, float], weights: list[float], window_s: float
) -> float:
    """Bytes per unit of weight so that everything is about twice what the window can move."""
    unit = 1e12
    for _ in range(8):
        sizes = [max(128 * GiB, w * unit) for w in weights]
        best = _lp(copies, caps, sizes, window_s)
        unit *= 2 * best / sum(sizes)
    return unit


def route_of(estate: Estate, move: Move) -> tuple[LabVolume, LabVolume]:
    vm = next(v for v in estate.data.vms if v.id == move.vm_id)
    src = estate.volume_of(vm.host, vm.drives[0].path or "")
    dst = estate.volume_of(vm.host, move.destination)
    return src, dst


def bound(estate: Estate, moves: list[Move], window_s: float) -> tuple[float, float, str]:
    """Two upper bounds on the bytes of the copies any schedule completes within ``window_s``
    under the lab's model, ignoring per-host limits: (integer bound, LP relaxation, how).

    Every copy runs at most at its demand (its rate alone: max-min sharing never gives more),
    so a copy completes only if ``bytes_m <= demand_m * T``, and a resource delivers at most
    ``capacity_r * T`` bytes. The set of copies any schedule completes therefore satisfies

        sum_{m on r} bytes_m x_m <= capacity_r * T  for every resource r,
        x_m in {0, 1},  x_m = 0 where bytes_m > demand_m * T

    and the night's bytes (completed copies only) are at most the best such set: the integer
    bound (scipy's HiGHS MILP). A copy also needs room on its destination: what the copies into a
    volume write is at most its free space plus what the copies out of it free (their sources
    deleted, in any order: a relaxation), so a move into a full volume completes in no schedule.
    The LP relaxation (0 <= y_m <= min(bytes_m, demand_m * T), counting parts of copies no
    schedule can finish) is looser and printed beside it. Without scipy: a dual-feasible cover
    bound for both, without the space rows (looser still, still a bound)."""
    routes = [(m.vm_id, *route_of(estate, m)) for m in moves]
    copies, caps = _resources(estate, routes)
    sizes = [float(m.bytes) for m in moves]
    try:
        import scipy  # noqa: F401
    except ImportError:
        cap_m = [min(b, c.demand * window_s) for b, c in zip(sizes, copies, strict=True)]
        loose = _dual_bound(copies, caps, cap_m, window_s)
        return loose, loose, "dual cover (no scipy)"
    space = _space(estate, routes, sizes)
    tight = _milp(copies, caps, sizes, window_s, space)
    return tight, _lp(copies, caps, sizes, window_s, space), "integer bound (scipy HiGHS MILP)"


def _space(
    estate: Estate, routes: list[tuple[str, LabVolume, LabVolume]], sizes: list[float]
) -> tuple[list[list[float]], list[float]]:
    """Rows in bytes: written into a volume less freed from it, at most its free space."""
    rows, free = [], []
    for vol in estate.data.volumes:
        row = [
            (s if dst is vol else 0.0) - (s if src is vol else 0.0)
            for (_, src, dst), s in zip(routes, sizes, strict=True)
        ]
        if any(row):
            rows.append(row)
            free.append(float(estate.free_bytes(vol)))
    return rows, free


def _constraints(
    copies: list[throughput.Copy], caps: dict[str, float], window_s: float
) -> tuple[list[list[float]], list[float]]:
    res = sorted({r for c in copies for r in c.resources if r in caps})
    a = [[1.0 if r in c.resources else 0.0 for c in copies] for r in res]
    return a, [caps[r] * window_s for r in res]


def _milp(
    copies: list[throughput.Copy],
    caps: dict[str, float],
    sizes: list[float],
    window_s: float,
    space: tuple[list[list[float]], list[float]],
) -> float:
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    a, b = _constraints(copies, caps, window_s)
    size = np.array(sizes)
    fits = np.array([s <= c.demand * window_s for s, c in zip(sizes, copies, strict=True)])
    rows = np.vstack([np.array(a) * size, np.array(space[0]).reshape(-1, len(sizes))])
    res = milp(
        -size,
        constraints=LinearConstraint(rows, -np.inf, np.array(b + space[1])),
        integrality=np.ones(len(sizes)),
        bounds=Bounds(0, fits.astype(float)),
        options={"time_limit": 60},
    )
    if res.x is None:
        raise RuntimeError(f"bound MILP failed: {res.message}")
    # stopped by the time limit: its dual bound, still an upper bound on the best set
    return float(-res.fun) if res.success else float(-res.mip_dual_bound)


def _lp(
    copies: list[throughput.Copy],
    caps: dict[str, float],
    sizes: list[float],
    window_s: float,
    space: tuple[list[list[float]], list[float]] = ([], []),
) -> float:
    cap_m = [min(b, c.demand * window_s) for b, c in zip(sizes, copies, strict=True)]
    try:
        from scipy.optimize import linprog
    except ImportError:
        return _dual_bound(copies, caps, cap_m, window_s)
    a, b = _constraints(copies, caps, window_s)
    # y_m bytes of copy m: a space row's coefficient is its sign (into +1, out of -1)
    a += [[(v > 0) - (v < 0) for v in row] for row in space[0]]
    lp = linprog(
        [-1.0] * len(copies),
        A_ub=a,
        b_ub=b + space[1],
        bounds=[(0, x) for x in cap_m],
        method="highs",
    )
    if not lp.success:
        raise RuntimeError(f"bound LP failed: {lp.message}")
    return float(-lp.fun)


def _dual_bound(
    copies: list[throughput.Copy], caps: dict[str, float], cap_m: list[float], window_s: float
) -> float:
    covered = [False] * len(copies)
    total = 0.0
    for r in sorted(caps, key=lambda r: caps[r]):
        users = [i for i, c in enumerate(copies) if r in c.resources and not covered[i]]
        if users and caps[r] * window_s < sum(cap_m[i] for i in users):
            total += caps[r] * window_s
            for i in users:
                covered[i] = True
    return total + sum(x for x, cov in zip(cap_m, covered, strict=True) if not cov)


def plan_text(moves: list[Move]) -> str:
    lines = ["moves:"]
    for m in moves:
        lines.append(f"  - {{host: {m.host}, vm: {m.vm}, destination: '{m.destination}'}}")
    return "\n".join(lines) + "\n"
