"""Rebalancing: storage moves that bring full volumes under a threshold while copying as few bytes
as possible, written out as a plan file ``hvmove precheck`` reads."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hvmove.analysis.loaders import GiB
from hvmove.analysis.volumes import cluster_of, root_key, volume_key
from hvmove.models import MoveRequest, Plan
from hvmove.paths import key_root
from hvmove.snapshots import BLOCKER_TYPES, ISO, PASS_THROUGH, SHARED_VHDX

VolKey = tuple[str, str]

_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
MOVABLE_STATES = ("Running", "Off", "Saved")  # precheck refuses a paused or transitional VM
BLOCKER_LABELS = {
    ISO: "ISO attached",
    PASS_THROUGH: "pass-through disk",
    SHARED_VHDX: "shared VHDX",
}


def destination_for(volume_root: str, vm_name: str) -> str:
    """``<volume root>VMs\\<vm name>``, with the characters Windows refuses in a name replaced."""
    folder = _UNSAFE.sub("_", vm_name).strip(" .") or "vm"
    return volume_root.rstrip("\\/") + "\\VMs\\" + folder


@dataclass
class _Vol:
    key: tuple[str, str]
    host: str
    hosts: frozenset[str]  # lower-case names of the hosts that see it
    root: str
    kind: str
    capacity: int
    used: int
    used_before: int

    def pct(self, used: float | None = None) -> float:
        return 100.0 * (self.used if used is None else used) / self.capacity


@dataclass
class _Cand:
    host: str
    vm_id: str
    name: str
    home: tuple[str, str]
    total: int  # what the move copies
    on: dict[tuple[str, str], int] = field(default_factory=dict)  # bytes per volume key
    checkpoints: bool = False  # holds differencing disks (checkpoints)


class Proposal(list[MoveRequest]):
    """The proposed moves (a plain list of MoveRequest, ready for ``write_plan``) with the tables a
    reader needs next to them: ``details`` (one row per move), ``volumes`` (fill before and after)
    and ``unfixed`` (volumes still at or above the threshold, with the reason)."""

    def __init__(
        self,
        moves: Iterable[MoveRequest],
        details: pd.DataFrame,
        volumes: pd.DataFrame,
        unfixed: pd.DataFrame,
    ) -> None:
        super().__init__(moves)
        self.details = details
        self.volumes = volumes
        self.unfixed = unfixed

    @property
    def bytes_moved(self) -> int:
        return int(self.details["bytes"].sum()) if not self.details.empty else 0


def _min_cover(freed: list[int], cost: list[int], need: int, budget: int = 200_000) -> list[int]:
    """Indices of items whose ``freed`` sums to at least ``need`` at the least total ``cost``
    (then the fewest items). Branch and bound, exact within ``budget`` nodes, else the best found
    so far (seeded by a greedy cover). Every cost is at least its freed, which makes
    ``cost + what is still needed`` a valid lower bound."""
    n = len(freed)
    order = sorted(range(n), key=lambda i: (-freed[i], cost[i]))
    # greedy seed: the cheapest single item that covers the rest, else the largest and go on
    best: list[int] = []
    left = need
    pool = list(order)
    while left > 0 and pool:
        single = [i for i in pool if freed[i] >= left]
        pick = min(single, key=lambda i: cost[i]) if single else pool[0]
        best.append(pick)
        pool.remove(pick)
        left -= freed[pick]
    if left > 0:
        return []
    best_score = (sum(cost[i] for i in best), len(best))
    suffix = [0] * (n + 1)
    for pos in range(n - 1, -1, -1):
        suffix[pos] = suffix[pos + 1] + freed[order[pos]]
    nodes = 0
    chosen: list[int] = []

    def dfs(pos: int, got: int, spent: int) -> None:
        nonlocal best, best_score, nodes
        nodes += 1
        if got >= need:
            score = (spent, len(chosen))
            if score < best_score:
                best, best_score = list(chosen), score
            return
        if pos == n or nodes > budget or got + suffix[pos] < need:
            return
        if (spent + need - got, len(chosen) + 1) >= best_score:
            return
        i = order[pos]
        chosen.append(i)
        dfs(pos + 1, got + freed[i], spent + cost[i])
        chosen.pop()
        dfs(pos + 1, got, spent)

    if n <= 500:  # recursion depth is n
        dfs(0, 0, 0)
    return best


def _load_volumes(volumes: pd.DataFrame) -> dict[VolKey, _Vol]:
    """One ``_Vol`` per volume; a share reported by several hosts is one, seen by all of them."""
    vols: dict[VolKey, _Vol] = {}
    for row in volumes.itertuples(index=False):
        cluster = cluster_of(getattr(row, "cluster", None))
        key = volume_key(str(row.host), str(row.volume), str(row.kind), cluster)
        vol = vols.get(key)
        if vol is None:
            used = int(row.capacity) - int(row.free)
            vols[key] = _Vol(
                key=key,
                host=str(row.host),
                hosts=frozenset({str(row.host).lower()}),
                root=str(row.volume),
                kind=str(row.kind),
                capacity=int(row.capacity),
                used=used,
                used_before=used,
            )
        else:  # a share reported by another host
            vol.hosts = vol.hosts | {str(row.host).lower()}
            vol.host = ", ".join(sorted({*vol.host.split(", "), str(row.host)}))
    return {k: v for k, v in vols.items() if v.capacity > 0}


def _crossing(forecast: pd.DataFrame | None, vols: dict[VolKey, _Vol]) -> set[VolKey]:
    """Volumes the forecast expects to cross the threshold: never destinations."""
    crossing: set[VolKey] = set()
    if forecast is not None and not forecast.empty:
        for row in forecast.itertuples(index=False):
            if row.status != "ok":
                for host in str(row.host).split(", "):
                    crossing.add(_key_of(vols, host, str(row.volume)))
    return crossing


def _odx_seen(moves_history: pd.DataFrame | None) -> set[tuple[str, str, str]]:
    """(host, source root, destination root) of every completed copy the history ran with ODX."""
    seen: set[tuple[str, str, str]] = set()
    if moves_history is not None and not moves_history.empty:
        done = moves_history[(moves_history["status"] == "completed")]
        for row in done[done["odx"].fillna(False).astype(bool)].itertuples(index=False):
            seen.add(
                (
                    str(row.host).lower(),
                    # moves record volume keys ('hv01|d:\\'); older records, bare roots
                    key_root(str(row.source_volume)),
                    key_root(str(row.destination_volume)),
                )
            )
    return seen


def _key_of(vols: dict[VolKey, _Vol], host: str, root: str) -> VolKey:
    """The volume ``host`` sees at ``root``: its own local one, or the share or CSV (of its
    cluster) among those it sees."""
    root = root_key(root)
    if (host.lower(), root) in vols:
        return (host.lower(), root)
    for k, vol in vols.items():
        if k[1] == root and host.lower() in vol.hosts:
            return k
    return ("*", root) if ("*", root) in vols else (host.lower(), root)


@dataclass
class _DiskFacts:
    on: dict[tuple[str, str], dict[VolKey, int]] = field(default_factory=dict)  # per VM, per volume
    with_checkpoints: set[tuple[str, str]] = field(default_factory=set)
    blocked: dict[tuple[str, str], str] = field(default_factory=dict)  # VMs precheck would refuse


def _disk_facts(disks: pd.DataFrame | None, vols: dict[VolKey, _Vol]) -> _DiskFacts:
    facts = _DiskFacts()
    if disks is None or disks.empty:
        return facts
    for row in disks.itertuples(index=False):
        vm_key = (str(row.host).lower(), str(row.vm_id).lower())
        if row.type in BLOCKER_TYPES:
            facts.blocked[vm_key] = BLOCKER_LABELS[str(row.type)]
            continue
        per = facts.on.setdefault(vm_key, {})
        k = _key_of(vols, str(row.host), str(row.volume))
        per[k] = per.get(k, 0) + int(row.file_size)
        if row.type == "Differencing":
            facts.with_checkpoints.add(vm_key)
    return facts


def _candidates(
    vms: pd.DataFrame, vols: dict[VolKey, _Vol], facts: _DiskFacts, excluded_vms: set[str]
) -> tuple[list[_Cand], dict[VolKey, list[str]]]:
    """The VMs that may move, and per volume the VMs that cannot (with why)."""
    cands: list[_Cand] = []
    names_per_host: dict[tuple[str, str], int] = {}
    for row in vms.itertuples(index=False):
        nk = (str(row.host).lower(), str(row.vm_name).lower())
        names_per_host[nk] = names_per_host.get(nk, 0) + 1
    stuck: dict[VolKey, list[str]] = {}
    for row in vms.itertuples(index=False):
        host, vm_id, name = str(row.host), str(row.vm_id), str(row.vm_name)
        state = str(getattr(row, "state", "Running"))
        vm_key = (host.lower(), vm_id.lower())
        why = facts.blocked.get(vm_key) or ("" if state in MOVABLE_STATES else f"{state.lower()}")
        home = _key_of(vols, host, str(row.volume))
        if why:
            stuck.setdefault(home, []).append(f"{name} ({why})")
            continue
        total = int(row.file_bytes)
        on = dict(facts.on.get(vm_key, {}))
        # what the disks do not account for (configuration, state files) sits with the config
        on[home] = on.get(home, 0) + max(0, total - sum(on.values()))
        total = max(total, sum(on.values()))
        # a name shared by two VMs of one host is ambiguous in a plan; the id is not
        label = name if names_per_host[(host.lower(), name.lower())] == 1 else vm_id
        if name.lower() in excluded_vms or vm_id.lower() in excluded_vms:
            continue
        cands.append(
            _Cand(
                host=host,
                vm_id=vm_id,
                name=label,
                home=home,
                total=total,
                on=on,
                checkpoints=vm_key in facts.with_checkpoints,
            )
        )
    return cands, stuck


@dataclass
class _Search:
    """Where each candidate may go, and the cheapest set that frees a volume."""

    vols: dict[VolKey, _Vol]
    limit_pct: float
    crossing: set[VolKey]
    excluded_roots: set[str]
    odx_seen: set[tuple[str, str, str]]

    def limit(self, vol: _Vol) -> float:
        return vol.capacity * self.limit_pct / 100.0

    def destinations(self, c: _Cand, used: dict[VolKey, int]) -> list[_Vol]:
        fits = []
        for vol in self.vols.values():
            if (
                vol.key == c.home
                or c.host.lower() not in vol.hosts
                or vol.key in self.crossing
                or root_key(vol.root) in self.excluded_roots
            ):
                continue
            gain = c.total - c.on.get(vol.key, 0)
            if used[vol.key] + gain <= self.limit(vol):
                fits.append(vol)

        def preference(vol: _Vol) -> tuple[int, int, float]:
            odx = (c.host.lower(), c.home[1], root_key(vol.root)) in self.odx_seen
            room = self.limit(vol) - used[vol.key] - (c.total - c.on.get(vol.key, 0))
            return (0 if vol.kind == "local" else 1, 0 if odx else 1, -room)

        return sorted(fits, key=preference)

    def cover(
        self, vol: _Vol, pool: list[_Cand], need: int
    ) -> tuple[list[tuple[_Cand, _Vol]], str]:
        """The cheapest set of ``pool`` that frees ``need`` on ``vol`` and fits elsewhere."""
        pool = list(pool)
        reason = "holds no VM that could move"
        while pool:
            used = {k: v.used for k, v in self.vols.items()}
            movable = [c for c in pool if self.destinations(c, used)]
            room = sum(c.on[vol.key] for c in movable)
            if room < need:
                return [], (
                    f"needs {need / GiB:,.1f} GiB freed; the VMs that fit on another volume of "
                    f"their host hold {room / GiB:,.1f} GiB here"
                )
            picks = _min_cover([c.on[vol.key] for c in movable], [c.total for c in movable], need)
            trial: list[tuple[_Cand, _Vol]] = []
            misfit: _Cand | None = None
            for c in sorted((movable[i] for i in picks), key=lambda c: -c.total):
                options = self.destinations(c, used)
                if not options:
                    misfit = c
                    break
                trial.append((c, options[0]))
                for k, b in c.on.items():
                    if k in used:
                        used[k] -= b
                used[options[0].key] += c.total
            if misfit is None:
                return trial, ""
            # it fit alone but not next to the others: search again without it
            pool.remove(misfit)
            reason = "the VMs that would free enough do not fit elsewhere together"
        return [], reason


def _relieve(
    search: _Search,
    cands: list[_Cand],
    stuck: dict[VolKey, list[str]],
    threshold_pct: float,
) -> tuple[list[tuple[_Cand, _Vol]], list[dict[str, Any]]]:
    """Per full volume, fullest first: the moves that bring it down, or why it stays full."""
    vols = search.vols
    planned: list[tuple[_Cand, _Vol]] = []
    moved: set[str] = set()
    unfixed: list[dict[str, Any]] = []
    full = sorted(
        (v for v in vols.values() if v.pct() >= threshold_pct), key=lambda v: v.pct(), reverse=True
    )
    for vol in full:
        need = vol.used - int(search.limit(vol))
        if need <= 0:  # earlier moves already freed it
            continue
        pool = [c for c in cands if c.on.get(vol.key, 0) > 0 and c.vm_id not in moved]
        # a VM with checkpoints is a last resort: prechecks flag its chain, and a merge running
        # at move time blocks the move
        plain = [c for c in pool if not c.checkpoints]
        chosen, reason = search.cover(vol, plain, need)
        if not chosen and len(plain) < len(pool):
            chosen, reason = search.cover(vol, pool, need)
        if not chosen:
            if vol.key in stuck:
                reason += "; cannot move: " + ", ".join(stuck[vol.key])
            unfixed.append(
                {
                    "host": vol.host,
                    "volume": vol.root,
                    "used_pct": vol.pct(),
                    "need_gib": need / GiB,
                    "reason": reason,
                }
            )
            continue
        for c, dest in chosen:
            for k, b in c.on.items():
                if k in vols:
                    vols[k].used -= b
            dest.used += c.total
            moved.add(c.vm_id)
            planned.append((c, dest))
    return planned, unfixed


DETAIL_COLUMNS = [
    "host",
    "vm",
    "vm_id",
    "gib",
    "bytes",
    "from_volume",
    "to_volume",
    "destination",
    "odx_seen",
]


def _details(
    planned: list[tuple[_Cand, _Vol]],
    requests: list[MoveRequest],
    search: _Search,
) -> pd.DataFrame:
    vols = search.vols
    return pd.DataFrame(
        [
            {
                "host": c.host,
                "vm": c.name,
                "vm_id": c.vm_id,
                "gib": c.total / GiB,
                "bytes": c.total,
                "from_volume": vols[c.home].root if c.home in vols else c.home[1],
                "to_volume": dest.root,
                "destination": req.destination,
                "odx_seen": (c.host.lower(), c.home[1], root_key(dest.root)) in search.odx_seen,
            }
            for (c, dest), req in zip(planned, requests, strict=True)
        ],
        columns=DETAIL_COLUMNS,
    )


def _volume_rows(
    vols: dict[VolKey, _Vol],
    planned: list[tuple[_Cand, _Vol]],
    unfixed: list[dict[str, Any]],
    threshold_pct: float,
) -> pd.DataFrame:
    touched = {c.home for c, _ in planned} | {d.key for _, d in planned}
    still = {(u["host"], u["volume"]) for u in unfixed}
    rows = []
    for vol in sorted(vols.values(), key=lambda v: (v.host, v.root)):
        if vol.pct(vol.used_before) >= threshold_pct:
            status = "still above" if (vol.host, vol.root) in still else "fixed"
        elif vol.key in touched:
            status = "destination"
        else:
            status = "unchanged"
        rows.append(
            {
                "host": vol.host,
                "volume": vol.root,
                "kind": vol.kind,
                "capacity_gib": vol.capacity / GiB,
                "used_pct_before": vol.pct(vol.used_before),
                "used_pct_after": vol.pct(),
                "change_gib": (vol.used - vol.used_before) / GiB,
                "status": status,
            }
        )
    return pd.DataFrame(rows)


def rebalance(
    volumes: pd.DataFrame,
    vms: pd.DataFrame,
    threshold_pct: float = 85.0,
    *,
    disks: pd.DataFrame | None = None,
    margin_pct: float = 1.0,
    forecast: pd.DataFrame | None = None,
    moves_history: pd.DataFrame | None = None,
    exclude_volumes: Collection[str] = ("C:\\",),
    exclude_vms: Collection[str] = (),
) -> Proposal:
    """Storage moves that bring every volume at or above ``threshold_pct`` down to
    ``threshold_pct - margin_pct`` while moving as few bytes as possible.

    ``volumes``, ``vms`` and ``disks`` are the newest rows of ``volume_fill``, ``vm_growth`` and
    ``disks`` (see ``latest``). A storage move never changes host, so a VM's destinations are the
    other volumes of its own host and the shares that host sees; a destination must itself end at
    or below ``threshold_pct - margin_pct``. Volumes the forecast expects to cross (status not
    ``ok``) and ``exclude_volumes`` (roots; the system drive by default) are never destinations;
    ``exclude_vms`` (names or ids) never move. With ``disks``, a VM whose disks sit on several
    volumes frees on each what it really holds there. With ``moves_history``, a local
    destination the history shows an ODX copy to is preferred over other local ones (faster).

    Per full volume (fullest first), the set of its VMs that frees enough at the least total bytes
    copied is searched exactly (branch and bound), then each chosen VM goes, largest first, to the
    eligible destination with the most room left; a VM that fits nowhere is dropped and the search
    repeated. VMs with checkpoints (differencing disks, seen in ``disks``) are used only when the
    others cannot free enough; VMs precheck would refuse (an attached ISO, a pass-through or shared
    disk, seen in ``disks``; a state other than Running, Off or Saved) never move. A volume that
    cannot be brought down is reported in ``unfixed`` and none of its VMs moves: a partial move
    copies bytes without solving anything.
    """
    vols = _load_volumes(volumes)
    search = _Search(
        vols=vols,
        limit_pct=threshold_pct - margin_pct,
        crossing=_crossing(forecast, vols),
        excluded_roots={root_key(r) for r in exclude_volumes},
        odx_seen=_odx_seen(moves_history),
    )
    cands, stuck = _candidates(
        vms, vols, _disk_facts(disks, vols), {v.lower() for v in exclude_vms}
    )
    planned, unfixed = _relieve(search, cands, stuck, threshold_pct)
    requests = [
        MoveRequest(
            host=c.host,
            vm=c.name,
            mode="all",
            destination=destination_for(dest.root, c.name),
        )
        for c, dest in planned
    ]
    return Proposal(
        requests,
        _details(planned, requests, search),
        _volume_rows(vols, planned, unfixed, threshold_pct),
        pd.DataFrame(unfixed, columns=["host", "volume", "used_pct", "need_gib", "reason"]),
    )


def write_plan(moves: Iterable[MoveRequest], path: str | Path, comment: str = "") -> Path:
    """Write ``moves`` as a plan file (YAML, ``hvmove.models.Plan``) and return its path. A plan
    needs at least one move: an empty proposal raises ValueError rather than writing a file that
    ``hvmove precheck`` would refuse."""
    plan = Plan(moves=list(moves))  # validates, and refuses an empty plan
    entries = []
    for m in plan.moves:
        rest = m.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
        entry = {"host": m.host, "vm": m.vm, "mode": m.mode}
        entry.update({k: v for k, v in rest.items() if k not in entry})
        entries.append(entry)
    text = yaml.safe_dump({"moves": entries}, sort_keys=False, allow_unicode=True, width=1000)
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    out = Path(path)
    out.write_text(header + text, encoding="utf-8")
    return out


def read_plan(path: str | Path) -> Plan:
    """A plan file parsed and validated, as ``write_plan`` wrote it."""
    return Plan.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------------
# plots (matplotlib imported on use)
# --------------------------------------------------------------------------------------------------


def describe_run(now: datetime | None = None) -> str:
    """A one-line provenance note for a written plan."""
    stamp = (now or datetime.now().astimezone()).isoformat(timespec="seconds")
    return f"proposed by hvmove.analysis.rebalance on {stamp}; run `hvmove precheck` before use"
