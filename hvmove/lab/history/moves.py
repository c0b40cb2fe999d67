"""The nights' moves: which VM moved when (walking back from where each VM is now), a few that
failed, and the store rows each move leaves (record, precheck report, steps, samples)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from hvmove import models
from hvmove.lab.estate import norm
from hvmove.lab.history.copies import CopyRun, copy_run, timeline
from hvmove.lab.history.model import BATCH_PREFIX, VM, Vol, folder, odx_between
from hvmove.store import MoveRecord, StepRecord, ThroughputSample


def plan_moves(vms: list[VM], vols: list[Vol], days: int, rng: random.Random) -> None:
    """Give VMs past moves, walking back from where they are now: the destination of each move is
    where the VM was next, the source a volume of the same host (ODX partners favoured, so both
    kinds of copy are well represented)."""
    count = max(6, round(days * 0.4))
    events: dict[int, set[int]] = {}
    for _ in range(count * 4):
        if sum(len(d) for d in events.values()) >= count:
            break
        i = rng.randrange(len(vms))
        day = rng.randint(1, days - 1)
        taken = events.setdefault(i, set())
        if all(abs(day - d) >= 3 for d in taken):
            taken.add(day)
    for i, moves_days in events.items():
        vm = vms[i]
        current = vm.final_root
        options = [v for v in vols if v.sees(vm.host)]
        for day in sorted(moves_days, reverse=True):
            dest = next((v for v in options if norm(v.root) == norm(current)), None)
            if dest is None:  # a VM on a volume its host does not report: leave it in place
                break
            # a VM never lived on a volume it would have filled (a 127 GiB system drive)
            size = vm.bytes_at(day, days - 1)
            sources = [v for v in options if v is not dest and size <= 0.25 * v.capacity]
            if not sources:
                continue
            weights = [
                4.0 if odx_between(v, dest) else 0.3 if v.root.upper() == "C:\\" else 1.0
                for v in sources
            ]
            src = rng.choices(sources, weights=weights)[0]
            vm.moves.append((day, src.root, dest.root))
            current = src.root


@dataclass
class MoveRow:
    record: MoveRecord
    steps: list[StepRecord]
    samples: list[ThroughputSample]


def snapshot_time(end: datetime, days: int, day: int) -> datetime:
    return end - timedelta(days=days - 1 - day)


def move_rows(
    vm: VM,
    day: int,
    src: Vol,
    dst: Vol,
    vms_last: int,
    start: datetime,
    rng: random.Random,
    odx_speedup: float,
    failure: str | None = None,
) -> MoveRow:
    run = copy_run(vm, day, src, dst, vms_last, rng, odx_speedup)
    # the move that brought the VM home went to the folder it has now
    if norm(dst.root) == norm(vm.final_root):
        destination = vm.final_location
    else:
        destination = folder(dst.root, vm.name)
    move_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    request = {"host": vm.host, "vm": vm.name, "mode": "all", "destination": destination}
    went = timeline(move_id, start, run, dst, rng, failure)
    finished = went.steps[-1].ended_at or start
    report = _precheck_report(vm, destination, run, failure)
    report.source_volume, report.destination_volume = src.key, dst.key
    record = MoveRecord(
        id=move_id,
        host=vm.host,
        vm_id=vm.id,
        vm_name=vm.name,
        mode="all",
        destination=destination,
        request=request,
        batch=BATCH_PREFIX + start.date().isoformat(),
        status=went.status,
        last_step=went.last_step,
        reason=went.reason,
        created_at=start - timedelta(seconds=rng.uniform(5, 60)),
        started_at=start,
        finished_at=finished,
        # the production keys, not roots: learning and the planner look history up by them
        source_volume=src.key,
        destination_volume=dst.key,
        bytes_total=run.size,
        copy_seconds=went.copy_done,
        estimated_seconds=run.estimated_seconds,
        measured_mbps=run.measured_mbps,
        odx=run.odx,
        job_id=None if failure == "prechecks" else str(uuid.UUID(int=rng.getrandbits(128))),
        verified=went.verified,
        source_removed=went.removed,
        precheck=report.model_dump(mode="json"),
        verification={"test_vhd": "ok", "facts_equal": True} if went.verified else None,
        cleanup={"removed": len(vm.disks) + 1} if went.removed else None,
    )
    return MoveRow(record, went.steps, went.samples)


def _precheck_report(
    vm: VM, destination: str, run: CopyRun, failure: str | None
) -> models.PrecheckReport:
    checks = [
        models.Check(
            name="space",
            status="fail" if failure == "prechecks" else "pass",
            detail="",
            numbers={"bytes_needed": int(run.size * 1.1)},
        ),
        models.Check(
            name="odx",
            status="pass",
            detail="offload" if run.odx else "no offload",
            numbers={"odx": run.odx},
        ),
        models.Check(
            name="bandwidth", status="pass", detail="", numbers={"mbps": run.measured_mbps}
        ),
    ]
    return models.PrecheckReport(
        host=vm.host,
        vm=vm.name,
        vm_id=vm.id,
        destination=destination,
        checks=checks,
        bytes_to_copy=run.size,
        odx=run.odx,
        mbps=run.measured_mbps,
        eta_seconds=run.estimated_seconds,
    )


def history_moves(
    vms: list[VM],
    vols: list[Vol],
    days: int,
    end_at: datetime,
    rng: random.Random,
    odx_speedup: float,
) -> list[MoveRow]:
    """The move records of the planned moves, plus a few that failed (their VM stayed put)."""
    last = days - 1
    events: list[tuple[int, VM, str, str, str | None]] = [
        (day, vm, src, dst, None) for vm in vms for day, src, dst in vm.moves
    ]
    kinds = ("prechecks", "copy")
    for n in range(max(1, days // 20) if vms else 0):
        vm = rng.choice(vms)
        day = rng.randint(1, last)
        if any(d == day for d, _, _ in vm.moves):
            continue
        here = vm.root_at(day - 1)
        others = [v for v in vols if v.sees(vm.host) and norm(v.root) != norm(here)]
        if others:
            events.append((day, vm, here, rng.choice(others).root, kinds[n % 2]))
    events.sort(key=lambda e: (e[0], e[1].name))
    rows: list[MoveRow] = []
    next_start: dict[int, datetime] = {}
    for day, vm, src_root, dst_root, failure in events:
        # one batch a night from 22:00, moves one after another
        night = snapshot_time(end_at, days, day) - timedelta(hours=8)
        start = next_start.get(day, night + timedelta(minutes=rng.uniform(0, 30)))
        src = vol_by_root(vols, vm.host, src_root)
        dst = vol_by_root(vols, vm.host, dst_root)
        row = move_rows(vm, day, src, dst, last, start, rng, odx_speedup, failure)
        rows.append(row)
        next_start[day] = (row.record.finished_at or start) + timedelta(
            seconds=rng.uniform(30, 300)
        )
    return rows


def vol_by_root(vols: list[Vol], host: str, root: str) -> Vol:
    for v in vols:
        if v.sees(host) and norm(v.root) == norm(root):
            return v
    raise KeyError(f"{host} {root}")
