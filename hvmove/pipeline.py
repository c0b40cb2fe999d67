"""The five steps of one VM move, as plain functions: prechecks, copy, cutover, verify, cleanup.

Each step reads the move record and looks at the host before it acts, so running a step again
after a crash (at any point) does the right thing: attach to a running job instead of starting a
second, skip a copy that already switched, never delete a source that was not verified. Prefect
wraps these in tasks (retries, logs, artifacts); nothing here knows Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hvmove import models, prechecks, shared_storage
from hvmove.config import HostConfig
from hvmove.errors import HvmoveError
from hvmove.hyperv.client import HostClient
from hvmove.hyperv.errors import HostBusy, MaybeRanError, TransientError
from hvmove.layout import norm, parent_locations, source_folders, unswitched
from hvmove.models import MoveRequest, PathReferences, PrecheckReport, VMInfo
from hvmove.moves import DEFAULT_SILENCE_S, follow, start_or_attach
from hvmove.store import Store

VHD_SUFFIXES = (".vhd", ".vhdx", ".avhd", ".avhdx")


class StepFailed(HvmoveError):
    """A step found the move cannot go on; the message says what the host showed."""


class Blocked(StepFailed):
    """Prechecks failed: nothing was changed."""


@dataclass
class Progress:
    percent: int
    bytes_done: int
    mbps: float | None
    eta_seconds: float | None
    job_state: str


def _vm(client: HostClient, vm_id: str) -> VMInfo:
    vms = client.inventory(vm_id).vms
    if not vms:
        raise StepFailed(f"VM {vm_id} is no longer on {client.name}")
    return vms[0]


# -- 1. prechecks ---------------------------------------------------------------------------------
def run_prechecks(
    client: HostClient,
    store: Store,
    move_id: str,
    request: MoveRequest,
    options: prechecks.Options,
    reserved: dict[str, int] | None = None,
) -> PrecheckReport:
    record = store.get(move_id)
    before = record.before or {}
    ours = prechecks.OwnAttempt(
        job_id=record.job_id, destinations=list(before.get("destinations", []))
    )
    outcome = prechecks.run(client, request, options, reserved, ours, vm_id=record.vm_id)
    report = outcome.report
    fields: dict[str, Any] = {"precheck": report.model_dump(mode="json")}
    if not report.already_done:
        fields.update(
            bytes_total=report.bytes_to_copy,
            estimated_seconds=report.eta_seconds,
            measured_mbps=report.mbps,
            odx=report.odx,
            source_volume=report.source_volume,
            destination_volume=report.destination_volume,
        )
    if record.before is None and outcome.vm is not None and outcome.layout is not None:
        # the "before" picture is taken once, by the first attempt, for verify and cleanup
        plan = outcome.layout
        fields["before"] = {
            "vm": outcome.vm.model_dump(mode="json"),
            "vhds": plan.vhds,
            "destinations": plan.destinations(),
            "configuration": plan.configuration,
        }
    store.update(move_id, **fields)
    if not report.ok:
        raise Blocked(report.reason())
    return report


# -- 2. copy / mirror -----------------------------------------------------------------------------
def run_copy(
    client: HostClient,
    store: Store,
    move_id: str,
    request: MoveRequest,
    *,
    retain_source: bool = True,
    poll_s: float = 2.0,
    on_progress: Callable[[Progress], None] | None = None,
    slot_wait_s: float = 3600.0,
    silence_s: float = DEFAULT_SILENCE_S,
    appear_wait_s: float = 120.0,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """retain_source is keep_source_until_verified: start through WMI with AvoidRemovingVHDs
    (every source copy stays for cleanup to delete after verification), else Move-VMStorage
    (Hyper-V deletes the moved disks' source at the switch). NOT_BEFORE: wait until then
    first, then look at the host and start: a move a night started before its window is
    ready to copy at its start, with only these host calls left to make."""
    if not_before is not None:
        time.sleep(max(0.0, (not_before - datetime.now(UTC)).total_seconds()))
    record = store.get(move_id)
    status = client.move_status(record.vm_id)
    if status.job is not None and status.job.running:
        # attach: ours from a crashed run, never start a second
        job = _CopyJob(status.job.job_id, started_here=False)
    else:
        found = _start_copy(
            client, store, record, request, retain_source, slot_wait_s, appear_wait_s, poll_s
        )
        if not isinstance(found, _CopyJob):
            return found  # nothing to copy, or no job appeared and the VM shows the outcome
        job = found
        store.update(move_id, job_id=job.job_id)
    total = record.bytes_total or 0
    t0 = time.monotonic()
    progress = _progress_recorder(store, move_id, total, t0, on_progress)
    ended = follow(client, record.vm_id, poll_s=poll_s, on_progress=progress, silence_s=silence_s)
    return _copy_outcome(client, store, record, request, job, ended, total, t0)


@dataclass
class _CopyJob:
    """The migration job the copy follows, and whether this attempt started it."""

    job_id: str
    started_here: bool


def _start_copy(
    client: HostClient,
    store: Store,
    record: Any,
    request: MoveRequest,
    retain_source: bool,
    slot_wait_s: float,
    appear_wait_s: float,
    poll_s: float,
) -> _CopyJob | dict[str, Any]:
    """No job is running: start one (after removing a dead attempt's partial files), or say why
    there is nothing to follow (the copy step's result)."""
    vm = _vm(client, record.vm_id)
    if not unswitched(request, vm):
        return {
            "skipped": True,
            "reason": "the VM already lives at the destination",
            "bytes": record.bytes_total,
            "seconds": record.copy_seconds,
        }
    if record.job_id:
        _remove_own_leftovers(client, record)
    start = _start_marked(client, store, record, request, retain_source, slot_wait_s)
    if start.status == "already_at_destination":
        return {"skipped": True, "reason": start.message, "bytes": record.bytes_total}
    started_here = start.status == "started"
    if start.job is not None:
        return _CopyJob(start.job.job_id, started_here)
    # "started" with no Msvm_MigrationJob yet (Hyper-V was slow to create it): the outcome is
    # unknown, so look again rather than assume either way
    appeared = _await_job(client, record.vm_id, appear_wait_s, poll_s)
    if appeared is None:
        return _outcome_without_job(client, record, request, started_here, start.message)
    return _CopyJob(appeared.job_id, started_here)


def _progress_recorder(
    store: Store,
    move_id: str,
    total: int,
    t0: float,
    on_progress: Callable[[Progress], None] | None,
) -> Callable[[models.MoveJob], None]:
    """What follow() calls with each sight of the job: a sample in the store (rate, and the
    copies it shared its volumes with) and the caller's progress."""
    last: dict[str, float] = {}

    def progress(job: models.MoveJob) -> None:
        done = int(total * job.percent_complete / 100)
        mbps = eta = None
        if last:
            dt = time.monotonic() - last["t"]
            if dt > 0 and done >= last["done"]:
                mbps = (done - last["done"]) / dt / 1e6
        elapsed = job.elapsed_seconds or (time.monotonic() - t0)
        if job.percent_complete > 0 and elapsed > 0:
            eta = elapsed * (100 - job.percent_complete) / job.percent_complete
            mbps = mbps if mbps is not None else done / elapsed / 1e6
        last.update(t=time.monotonic(), done=done)
        # with how many copies it shared its volumes: the planner learns the rate alone from it
        store.add_sample(move_id, job.percent_complete, done, mbps, store.copies_sharing(move_id))
        if on_progress is not None:
            on_progress(Progress(job.percent_complete, done, mbps, eta, job.job_state))

    return progress


def _copy_outcome(
    client: HostClient,
    store: Store,
    record: Any,
    request: MoveRequest,
    copy: _CopyJob,
    job: models.MoveJob | None,
    total: int,
    t0: float,
) -> dict[str, Any]:
    """The copy step's result from the job's last sight; a failed or vanished copy raises."""
    if job is None or (job.job_id != copy.job_id and not job.running):
        # the job is gone: it ended longer ago than TimeBeforeRemoval, or the host rebooted or
        # VMMS restarted (jobs survive neither). The VM's paths tell the outcome.
        if unswitched(request, _vm(client, record.vm_id)):
            raise StepFailed(
                "the move's job vanished (host restarted, or the Hyper-V management service) "
                "and the VM is still on its source; run the move again: it removes this "
                "attempt's partial files first"
            )
        return {
            "skipped": False,
            "job_state": "Completed",
            "bytes": total,
            "seconds": record.copy_seconds,
            "started_here": copy.started_here,
        }
    if not job.succeeded:
        reason = job.error_description or "no reason given"
        # AvoidRemovingVHDs also keeps a failed move's partial destination ("VHDs on the
        # destination in failure"): hvmove removes its own files (never one a VM references)
        # (only for a job that ended: the last sight of a running job that vanished says nothing)
        leftovers = "" if job.running else _remove_own_leftovers(client, store.get(record.id))
        raise StepFailed(
            f"the storage migration ended {job.job_state}: {reason} "
            f"(error {job.error_code:#x}); the VM stays on its source{leftovers}"
        )
    seconds = job.elapsed_seconds or (time.monotonic() - t0)
    store.update(record.id, copy_seconds=seconds)
    return {
        "skipped": False,
        "job_state": job.job_state,
        "bytes": total,
        "seconds": seconds,
        "mbps": total / seconds / 1e6 if seconds else None,
        "started_here": copy.started_here,
    }


def _start_marked(
    client: HostClient,
    store: Store,
    record: Any,
    request: MoveRequest,
    retain: bool,
    slot_wait_s: float,
) -> models.MoveStart:
    """Start the move with the record marked: from just before the start until the host names
    the job, a crash leaves a move this record started, and the rerun's prechecks must take a
    running job of this VM as its own rather than block on it."""
    store.update(record.id, job_id=prechecks.JOB_STARTING)
    try:
        return _start_waiting_for_slot(client, record.vm_id, request, retain, slot_wait_s)
    except MaybeRanError:
        raise  # it may have started: the mark stays
    except Exception:
        store.update(record.id, job_id=record.job_id)  # refused or never sent: nothing started
        raise


def _start_waiting_for_slot(
    client: HostClient, vm_id: str, request: MoveRequest, retain: bool, wait_s: float
) -> models.MoveStart:
    """Hyper-V refuses past MaximumStorageMigrations instead of queueing: wait for a slot."""
    deadline = time.monotonic() + wait_s
    delay = 2.0
    while True:
        try:
            return start_or_attach(
                client,
                vm_id,
                request.mode,
                destination=request.destination or "",
                virtual_machine_path=request.virtual_machine_path or "",
                snapshot_file_path=request.snapshot_file_path or "",
                smart_paging_file_path=request.smart_paging_file_path or "",
                vhds=[(v.source, v.destination) for v in request.vhds],
                keep_source=retain,
            )
        except HostBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 1.5, 30.0)


def _remove_own_leftovers(client: HostClient, record: Any) -> str:
    """Partial destination files of this move's failed or dead attempt are ours: remove them.
    The script refuses any file a VM references. Returns a note for the step's message."""
    before = record.before or {}
    planned = list(before.get("vhds", {}).values())
    # and each parent it may have carried beside its child (layout.carried_parents): only
    # VHD files among the recorded destinations; folders are never a leftover
    planned += [
        d
        for d in before.get("destinations", [])
        if d.lower().endswith(VHD_SUFFIXES) and d not in planned
    ]
    if not planned:
        return ""
    try:
        existing = [d.path for d in client.vhd_facts(planned).disks if d.exists]
        if not existing:
            return ""
        report = client.remove_files(existing, [])
    except TransientError as exc:
        return f"; its partial destination could not be removed now ({exc.detail})"
    note = f"; its partial destination was removed ({len(report.removed)} file(s))"
    if report.refused:
        note += "; kept: " + ", ".join(f"{r.path} ({r.reason})" for r in report.refused)
    return note


def _await_job(
    client: HostClient, vm_id: str, wait_s: float, poll_s: float
) -> models.MoveJob | None:
    """The VM's migration job, once Hyper-V shows it; None when none appeared in time."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            job = client.move_status(vm_id).job
        except TransientError:
            job = None
        if job is not None:
            return job
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def _outcome_without_job(
    client: HostClient, record: Any, request: MoveRequest, started_here: bool, message: str
) -> dict[str, Any]:
    """No job was ever seen: the VM's paths tell whether the move happened; if not, the outcome
    is unknown and the step fails so that a retry looks at the host again (and attaches to a job
    that appeared meanwhile, never starting a second one)."""
    if unswitched(request, _vm(client, record.vm_id)):
        raise StepFailed(
            "the storage migration was reported started but no migration job appeared and the "
            f"VM is still on its source ({message or 'no detail'}); the outcome is unknown: "
            "run the copy again, it looks at the host before it acts"
        )
    return {
        "skipped": False,
        "job_state": "Completed",
        "bytes": record.bytes_total,
        "seconds": record.copy_seconds,
        "started_here": started_here,
    }


# -- 3. cutover -----------------------------------------------------------------------------------
def run_cutover(
    client: HostClient, store: Store, move_id: str, request: MoveRequest
) -> dict[str, Any]:
    record = store.get(move_id)
    vm = _vm(client, record.vm_id)
    left = unswitched(request, vm)
    if left:
        raise StepFailed(
            f"not switched: still on the source: {', '.join(left)}; the copy can be retried"
        )
    before_state = ((record.before or {}).get("vm") or {}).get("state", vm.state)
    if before_state == "Running" and vm.state != "Running":
        raise StepFailed(f"{vm.name} was Running before the move and is {vm.state} now")
    return {
        "state": vm.state,
        "configuration_location": vm.configuration_location,
        "disks": [d.path for d in vm.drives if d.path],
        "parents": parent_locations((record.before or {}).get("vm"), vm),
        "cluster": _refresh_cluster(client, record, vm),
    }


def _refresh_cluster(client: HostClient, record: Any, vm: VMInfo) -> dict[str, Any] | None:
    """A clustered VM whose configuration moved: the cluster's configuration resource must
    follow, on the owner node (this host); Move-VMStorage's own refresh runs in its -AsJob thread
    and is likely lost, the WMI migration has none. The outcome goes into the evidence."""
    before = ((record.before or {}).get("vm") or {}).get("configuration_location")
    if not before or norm(before) == norm(vm.configuration_location):
        return None
    if not client.host_facts().cluster_name:
        return None
    result = client.refresh_cluster_config(vm.id)
    if result.clustered and not result.updated:
        raise StepFailed(
            f"the cluster configuration of {vm.name} was not refreshed: {result.detail}"
        )
    return result.model_dump(mode="json")


# -- 4. verification ------------------------------------------------------------------------------
def run_verify(client: HostClient, store: Store, move_id: str) -> dict[str, Any]:
    record = store.get(move_id)
    before = record.before or {}
    vm = _vm(client, record.vm_id)
    before_files = {
        norm(v["path"]): v
        for v in (before.get("vm") or {}).get("drives", [])
        for v in v.get("chain", [])
    }
    for v in (before.get("vm") or {}).get("checkpoint_files", []):
        before_files.setdefault(norm(v["path"]), v)
    mapping = {norm(s): d for s, d in (before.get("vhds") or {}).items()}
    # each parent where the child's ParentPath now says it is (moved or left in place: Hyper-V's
    # documentation is silent on parents no drive attaches, layout.carried_parents), so that its
    # row is compared with its own facts from before the move and the child's parent exactly
    parents = parent_locations(before.get("vm"), vm)
    mapping.update({norm(p["source"]): p["now"] for p in parents if p["now"]})
    now_files = {v.path: v for v in vm.vhd_files()}
    facts = client.vhd_facts(list(now_files)).disks
    ids_before = {v["disk_identifier"] for v in before_files.values()}
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    by_new = {norm(d): s for s, d in mapping.items()}
    for fact in facts:
        src = by_new.get(norm(fact.path))
        old = before_files.get(src) if src else before_files.get(norm(fact.path))
        row: dict[str, Any] = {
            "path": fact.path,
            "test_vhd": fact.test_ok,
            "moved_from": before_files[src]["path"]
            if src in before_files and src != norm(fact.path)
            else None,
        }
        if not fact.test_ok:
            problems.append(f"Test-VHD failed on {fact.path}: {fact.error or 'not usable'}")
        if fact.vhd is not None and old is not None:
            same = {
                "size": fact.vhd.size == old["size"],
                "format": fact.vhd.format == old["format"],
                "disk_identifier": fact.vhd.disk_identifier == old["disk_identifier"],
                "parent": _parent_ok(
                    fact.vhd.parent_path, old.get("parent_path"), mapping, before_files, now_files
                ),
            }
            row.update(
                before={k: old[k] for k in ("size", "format", "disk_identifier", "parent_path")},
                after={
                    "size": fact.vhd.size,
                    "format": fact.vhd.format,
                    "disk_identifier": fact.vhd.disk_identifier,
                    "parent_path": fact.vhd.parent_path,
                },
                same=same,
            )
            problems += [f"{fact.path}: {k} changed" for k, ok in same.items() if not ok]
        rows.append(row)
    missing = ids_before - {f.vhd.disk_identifier for f in facts if f.vhd}
    if before_files and missing:
        problems.append(f"{len(missing)} disk(s) of the VM before the move are not attached now")
    # compared with before the move: a guest without integration services says NoContact (or
    # Disabled) before and after, and that is no fault of the move; an OK heartbeat must stay OK
    beat_before = (before.get("vm") or {}).get("heartbeat") if before.get("vm") else "Ok"
    was_ok = (beat_before or "").startswith("Ok")
    if vm.state == "Running" and was_ok and not (vm.heartbeat or "").startswith("Ok"):
        problems.append(f"heartbeat is {vm.heartbeat!r}, was {beat_before!r} before the move")
    evidence = {
        "disks": rows,
        "heartbeat": vm.heartbeat,
        "state": vm.state,
        "parents": parents,
        "problems": problems,
        "verified": not problems,
    }
    store.update(move_id, verification=evidence, verified=not problems)
    if problems:
        raise StepFailed("verification failed: " + "; ".join(problems) + _source_note(record))
    return evidence


def _source_note(record: Any) -> str:
    """What is left of the source after a failed verification depends on how the move started."""
    path = (record.precheck or {}).get("move_path")
    if path == "wmi":
        return " - every source copy is kept (AvoidRemovingVHDs); cleanup will not run"
    if path == "move-vmstorage":
        return (
            " - Move-VMStorage deleted the moved disks' source at the switch (only parent disks "
            "are kept); cleanup will not run"
        )
    return " - cleanup will not run"


def _parent_ok(
    now_parent: str | None,
    old_parent: str | None,
    mapping: dict[str, str],
    before_files: dict[str, Any],
    now_files: dict[str, Any],
) -> bool:
    if not old_parent:
        return not now_parent
    if not now_parent:
        return False
    expected = mapping.get(norm(old_parent), old_parent)
    if norm(now_parent) == norm(expected):
        return True
    # or the same disk by identity wherever it is
    old = before_files.get(norm(old_parent))
    new = now_files.get(now_parent)
    return bool(old and new and old["disk_identifier"] == new.disk_identifier)


# -- 5. source cleanup ----------------------------------------------------------------------------
def run_cleanup(
    client: HostClient,
    store: Store,
    move_id: str,
    *,
    hosts: list[HostConfig] | None = None,
    ask: shared_storage.Ask | None = None,
) -> dict[str, Any]:
    """Delete the verified move's source files and the folders it left empty. Whatever a VM still
    uses (this host's, or on shared storage another configured host's) is kept and listed."""
    record = store.get(move_id)
    if not record.verified:
        raise StepFailed("refusing to clean up: the destination is not verified")
    before = record.before or {}
    sources = list((before.get("vhds") or {}).keys())
    vm_before = before.get("vm")
    folders = source_folders(VMInfo.model_validate(vm_before), sources) if vm_before else []
    try:
        used = shared_storage.in_use(
            client,
            client.host_facts,  # read only when a source is on a cluster shared volume
            hosts if hosts is not None else [client.host],
            sources,
            folders,
            ask or _no_peers,
        )
    except shared_storage.UnknownClusterNode as exc:
        raise StepFailed(str(exc)) from exc
    kept_files, kept_folders = used.file_paths(), used.folder_paths()
    to_remove = [p for p in sources if p.lower() not in kept_files]
    to_prune = [f for f in folders if f.lower() not in kept_folders]
    try:
        report = client.remove_files(to_remove, to_prune)
    except MaybeRanError:
        report = client.remove_files(to_remove, to_prune)  # idempotent: absent files are reported
    if report.refused:
        # every user was asked just before: a refusal now is a change under our feet
        raise StepFailed(
            "cleanup refused: " + "; ".join(f"{r.path}: {r.reason}" for r in report.refused)
        )
    removed_all = all(norm(p) in {norm(x) for x in report.removed + report.absent} for p in sources)
    report.folders_kept += used.folders
    evidence = report.model_dump(mode="json")
    evidence["kept"] = [r.model_dump(mode="json") for r in used.files]
    evidence["asked"] = used.asked
    store.update(move_id, cleanup=evidence, source_removed=removed_all)
    return evidence


# for hvmove.cancel, which reads the VM and removes a stopped attempt's files the same way
vm_info = _vm
remove_own_leftovers = _remove_own_leftovers


def _no_peers(name: str, files: list[str], folders: list[str]) -> PathReferences:
    raise StepFailed(f"cleanup needs to ask {name}, and no way to reach other hosts was given")
