"""The generated estate's parts: volumes with their fill story, disks, VMs that remember where
they lived, and the constants every part of the history shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from hvmove.errors import HvmoveError
from hvmove.lab.estate import norm
from hvmove.paths import volume_key
from hvmove.snapshots import volume_for

GiB = 1024**3
MB = 1_000_000
THRESHOLD_PCT = 85.0
SOURCE = "lab-history"  # Snapshot.source of generated snapshots
BATCH_PREFIX = "lab-history/"  # MoveRecord.batch of generated moves
ODX_ETA_FACTOR = 4.0  # the estimate's assumed ODX speedup: conservative, so ODX beats its ETA


class HistoryError(HvmoveError, ValueError):
    """The store cannot take a generated history as asked (the CLI prints it as one line)."""


@dataclass
class Vol:
    root: str
    kind: str
    hosts: list[str]
    capacity: int
    bandwidth_mbps: float
    array: str | None
    odx: bool
    label: str
    role: str = "steady"
    end_pct: float = 50.0
    rate_pct: float = 0.05  # percent of capacity per day
    cluster: str | None = None  # the hosts' failover cluster (a CSV's key names it)

    def sees(self, host: str) -> bool:
        return host.lower() in (h.lower() for h in self.hosts)

    @property
    def key(self) -> str:
        """The volume's production key (hvmove.paths.volume_key), as the prechecks report it and
        the store's moves and the planner's history lookups use it: a local D:\\ per host, a
        CSV per cluster, a share once whoever sees it."""
        return volume_key(self.root, kind=self.kind, host=self.hosts[0], cluster=self.cluster)

    @property
    def label_short(self) -> str:
        return f"{self.hosts[0] if self.kind == 'local' else 'shared'} {self.root}"


@dataclass
class Disk:
    rel: str  # path under the VM's folder ('Virtual Hard Disks\x.vhdx'), or absolute if outside
    inside: bool
    format: str
    type: str
    size: int
    file_end: int  # bytes on disk at the end of the history
    identifier: str
    parent: int | None = None  # index of the parent disk in the VM's disk list


@dataclass
class VM:
    host: str
    name: str
    id: str
    state: str
    final_location: str
    disks: list[Disk]
    drives: list[int]  # index of each drive's attached disk in ``disks``
    config_bytes: int
    growth: float  # fraction of the dynamic disks' size added per day
    shared: set[int] = field(default_factory=set)  # drives (positions) that are shared VHDX
    pass_through: list[int] = field(default_factory=list)  # host disk numbers
    dvd_paths: list[str] = field(default_factory=list)  # attached ISOs (they do not move)
    final_root: str = ""  # the volume of final_location, set once the volumes are known
    moves: list[tuple[int, str, str]] = field(default_factory=list)  # (day, from root, to root)

    def root_at(self, day: int) -> str:
        """Where the VM lived on snapshot ``day``: a move on night k shows from snapshot k on."""
        root = self.final_root
        for move_day, source, _ in sorted(self.moves, reverse=True):
            if day < move_day:
                root = source
        return root

    def location_at(self, day: int) -> str:
        root = self.root_at(day)
        if norm(root) == norm(self.final_root):
            return self.final_location
        return folder(root, self.name)

    def size_at(self, disk: Disk, day: int, last: int) -> int:
        if disk.type == "Fixed":
            return disk.file_end
        rate = self.growth * (3.0 if disk.type == "Differencing" else 1.0)
        return max(int(disk.file_end * 0.2), int(disk.file_end - disk.size * rate * (last - day)))

    def bytes_at(self, day: int, last: int) -> int:
        return sum(self.size_at(d, day, last) for d in self.disks) + self.config_bytes


def folder(root: str, name: str) -> str:
    return root.rstrip("\\") + "\\VMs\\" + name


def root_of(path: str, host: str, vols: list[Vol]) -> str:
    return volume_for(path, [v.root for v in vols if v.sees(host)])


def odx_between(a: Vol, b: Vol) -> bool:
    return a.odx and b.odx and a.array is not None and a.array == b.array
