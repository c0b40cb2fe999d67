"""`hvmove canary`: a scratch VM moved for real on the user's own host, to observe what hvmove
assumes about Windows before the first production move.

One run: remove what an interrupted canary left (by name prefix and marker file); create
``hvmove-canary-<id>`` (Off, a 1 GiB dynamic disk with a known pattern, a differencing child with
brackets in its name) in ``<path>\\hvmove-canary-<id>``; move it to ``<to>\\hvmove-canary-<id>``
with the pipeline's five steps on the path that keeps the source until verified, and back with
plain Move-VMStorage (the source removed at the switch); then remove the VM and every file and
folder it made. Each premise is reported as observed, with what the answer means for hvmove.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath

from hvmove import models, pipeline, prechecks, shared_storage
from hvmove.canary.premises import PROBED, cluster_premise, probe_premises
from hvmove.canary.report import CanaryReport, Premise, Step
from hvmove.config import Config, HostConfig
from hvmove.errors import ConfigError, HvmoveError
from hvmove.hyperv.client import HostClient, open_client
from hvmove.models_doctor import CanaryCreated, CanaryRemoval
from hvmove.moves import follow, start_or_attach
from hvmove.store import Store

__all__ = ["PREFIX", "CanaryReport", "Step", "remove_canaries", "run", "write"]

PREFIX = "hvmove-canary-"
SESSION_WATCH_S = 5.0  # how long the job is watched after its starting session closed


class CanaryFailed(HvmoveError):
    pass


@dataclass
class _Run:
    config: Config
    host: HostConfig
    client: HostClient
    store: Store
    report: CanaryReport
    poll_s: float
    on_step: Callable[[Step], None] | None
    created: CanaryCreated | None = None

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        row = Step(name=name, ok=False)
        t0 = time.monotonic()
        try:
            yield row
            row.ok = True
        except HvmoveError as exc:
            row.detail = f"{row.detail} {exc}".strip()
            raise
        finally:
            row.seconds = round(time.monotonic() - t0, 2)
            self.report.steps.append(row)
            if self.on_step is not None:
                self.on_step(row)


def run(
    config: Config,
    host: str,
    path: str,
    to: str | None = None,
    *,
    poll_s: float = 1.0,
    on_step: Callable[[Step], None] | None = None,
) -> CanaryReport:
    host_cfg = config.host(host)
    _check_folder(path, "--path")
    canary_id = secrets.token_hex(4)
    name = PREFIX + canary_id
    with (
        tempfile.TemporaryDirectory(prefix="hvmove-canary-") as work,
        open_client(config, host_cfg.name) as client,
    ):
        facts = client.host_facts()
        to = to or facts.virtual_machine_path
        _check_folder(to, "--to")
        if _key(to) == _key(path):
            raise ConfigError(f"--to {to} is the same folder as --path; give another one")
        report = CanaryReport(
            canary_id=canary_id,
            vm_name=name,
            host=host_cfg.name,
            path=path,
            to=to,
            started=_now(),
        )
        r = _Run(
            config, host_cfg, client, Store(f"sqlite:///{work}/canary.db"), report, poll_s, on_step
        )
        roots = [path, to]
        try:
            with r.step("remove leftovers of earlier canaries") as s:
                report.leftovers_removed = remove_canaries(client, roots, "", poll_s)
                s.detail = _removed(report.leftovers_removed)
            _create(r, name, path, to)
            _move(r, "keep-source path", str(PureWindowsPath(to, name)), keep_source=True)
            report.premises += probe_premises(r.client, r.created)
            _move(r, "plain Move-VMStorage", str(PureWindowsPath(path, name)), keep_source=False)
            report.premises.append(cluster_premise(facts))
        except HvmoveError as exc:
            report.error = str(exc)
            if r.created is not None and not any(p.name in PROBED for p in report.premises):
                # what the host does with brackets or attached disks may be why it failed
                with contextlib.suppress(HvmoveError):
                    report.premises += probe_premises(r.client, r.created)
        finally:
            with contextlib.suppress(HvmoveError), r.step("remove the canary") as s:
                report.removal = remove_canaries(client, roots, canary_id, poll_s)
                s.detail = _removed(report.removal)
            report.left_behind = _left_behind(client, name, roots)
            report.finished = _now()
            report.ok = (
                not report.error
                and all(s.ok for s in report.steps)
                and not report.left_behind
                and not report.removal.kept
            )
    return report


def remove_canaries(
    client: HostClient, roots: list[str], canary_id: str, poll_s: float = 1.0
) -> CanaryRemoval:
    """Stop any move of a canary VM (a run killed mid-move leaves one running), then remove the
    canary VMs and marked folders under ``roots`` (one canary, or every one when id is '')."""
    for vm in client.inventory().vms:
        if not vm.name.lower().startswith(PREFIX) or (
            canary_id and vm.name.lower() != PREFIX + canary_id
        ):
            continue
        status = client.move_status(vm.id)
        if status.job is not None and status.job.running:
            client.stop_move(vm.id)
            follow(client, vm.id, poll_s=poll_s, timeout_s=600)
    return client.call("Remove-CanaryVM", CanaryRemoval, Root=roots, CanaryId=canary_id)


def _create(r: _Run, name: str, path: str, to: str) -> None:
    marker = json.dumps({"hvmove_canary": name[len(PREFIX) :], "host": r.host.name, "at": _now()})
    with r.step("create the canary VM") as s:
        r.created = r.client.call(
            "New-CanaryVM",
            CanaryCreated,
            Name=name,
            Path=str(PureWindowsPath(path, name)),
            MarkerFolder=[str(PureWindowsPath(to, name))],
            Marker=marker,
        )
        s.detail = f"{r.created.name} ({r.created.vm_id}): {r.created.child_path}"


def _move(r: _Run, label: str, destination: str, *, keep_source: bool) -> None:
    """One move with the pipeline's five steps, observing the source at the switch."""
    assert r.created is not None
    vm_id = r.created.vm_id
    request = models.MoveRequest(
        host=r.host.name,
        vm=vm_id,
        mode="all",
        destination=destination,
        keep_source_until_verified=keep_source,
    )
    record = r.store.open_move(
        host=r.host.name, vm_id=vm_id, vm_name=r.created.name, request=request.model_dump()
    )
    mid = record.id
    with r.step(f"{label}: prechecks") as s:
        report = pipeline.run_prechecks(
            r.client, r.store, mid, request, prechecks.Options(probe_mib=16)
        )
        s.detail = f"{report.bytes_to_copy} bytes to copy, ETA {report.eta_seconds or 0:.0f} s"
    before = r.store.get(mid).before or {}
    sources = list((before.get("vhds") or {}).keys())
    parents = {
        (v.get("parent_path") or "").lower()
        for drive in (before.get("vm") or {}).get("drives", [])
        for v in drive.get("chain", [])
    }
    r.report.premises.append(_session_premise(r, label, request, mid, keep_source))
    with r.step(f"{label}: copy") as s:
        outcome = pipeline.run_copy(
            r.client, r.store, mid, request, retain_source=keep_source, poll_s=r.poll_s
        )
        s.detail = (
            f"job {outcome['job_state']}"
            if "job_state" in outcome
            else f"nothing left to copy: {outcome.get('reason', '')} (the job started for the "
            "session check had finished)"
        )
    r.report.premises.append(_source_premise(r, label, sources, parents, keep_source))
    with r.step(f"{label}: cutover"):
        pipeline.run_cutover(r.client, r.store, mid, request)
    with r.step(f"{label}: verify") as s:
        evidence = pipeline.run_verify(r.client, r.store, mid)
        s.detail = f"{len(evidence['disks'])} disk(s) verified"
    with r.step(f"{label}: cleanup") as s, shared_storage.asker(r.config) as ask:
        done = pipeline.run_cleanup(r.client, r.store, mid, hosts=r.config.hosts, ask=ask)
        s.detail = f"removed {len(done['removed'])} file(s), absent {len(done['absent'])}"
    r.store.finish(mid, "completed")


def _session_premise(
    r: _Run, label: str, request: models.MoveRequest, move_id: str, keep_source: bool
) -> Premise:
    """Start the move from a session of its own, close that session, look from another. The
    copy step then attaches to the job (or starts again if it died)."""
    with open_client(r.config, r.host.name) as starter:
        start = start_or_attach(
            starter,
            request.vm,
            "all",
            destination=request.destination or "",
            keep_source=keep_source,
        )
        at_close = starter.move_status(request.vm).job
    if start.job is not None:
        r.store.update(move_id, job_id=start.job.job_id)
    name = f"{label}: job visible after the starting session closed"
    if at_close is None or not at_close.running:
        return Premise(
            name=name,
            observed=None,
            detail="inconclusive: the move had ended before its session closed "
            f"({at_close.job_state if at_close else 'no job'})",
            impact="not observed on this host with the canary's small disk",
        )
    # a cancel takes effect asynchronously: watch the job for a few seconds from this session
    job = follow(r.client, request.vm, poll_s=min(r.poll_s, 0.5), timeout_s=SESSION_WATCH_S)
    survived = job is not None and job.job_state not in ("Terminated", "Killed")
    state = job.job_state if job else "no job"
    return Premise(
        name=name,
        observed=survived,
        detail=f"started in one WinRM session, closed it; another session sees: {state}"
        + (f" ({job.percent_complete} %)" if job else ""),
        impact="hvmove follows moves from fresh sessions; a move must outlive the session "
        "that started it"
        if survived
        else "the move died with its session: hvmove must keep the starting session open "
        "until the job ends (it does while a run lives; a crashed run leaves the VM on its source)",
    )


def _source_premise(
    r: _Run, label: str, sources: list[str], parents: set[str], keep_source: bool
) -> Premise:
    facts = r.client.vhd_facts(sources).disks if sources else []
    kept = [d.path for d in facts if d.exists]
    gone = [d.path for d in facts if not d.exists]
    if keep_source:
        return Premise(
            name=f"{label}: source kept at the switch",
            observed=bool(sources) and not gone,
            detail=f"after the switch: {len(kept)} source disk(s) still there, {len(gone)} gone"
            + (f" ({', '.join(gone)})" if gone else ""),
            impact="a failed verification still has the source to fall back on"
            if not gone
            else "the source copy did NOT survive the switch: verification has nothing to fall "
            "back on (review finding 1: -RetainVhdCopiesOnSource keeps only parents)",
        )
    # -RetainVhdCopiesOnSource keeps the parents (read-only) on purpose: only the others count
    moved = [p for p in kept if p.lower() not in parents]
    kept_parents = [p for p in kept if p.lower() in parents]
    return Premise(
        name=f"{label}: source removed at the switch",
        observed=bool(sources) and not moved,
        detail=f"after the switch: {len(gone)} source disk(s) gone, {len(moved)} moved disk(s) "
        f"and {len(kept_parents)} parent(s) still there (-RetainVhdCopiesOnSource keeps parents)",
        impact="Move-VMStorage deletes the moved disks' source itself, as documented"
        if not moved
        else "Move-VMStorage left the moved disks' source: cleanup removes it after verification",
    )


def _left_behind(client: HostClient, name: str, roots: list[str]) -> list[str]:
    left = [f"VM {vm.name}" for vm in client.inventory().vms if vm.name.lower() == name]
    folders = [str(PureWindowsPath(root, name)) for root in roots]
    with contextlib.suppress(HvmoveError):
        left += [v.path for v in client.volumes(folders).volumes if v.exists]
    return left


def _removed(r: CanaryRemoval) -> str:
    kept = "; ".join(f"kept {k.path}: {k.reason}" for k in r.kept)
    return f"{len(r.vms_removed)} VM(s), {len(r.folders_removed)} folder(s) removed" + (
        f"; {kept}" if kept else ""
    )


def _check_folder(path: str, option: str) -> None:
    p = PureWindowsPath(path)
    if not (p.drive and (p.root == "\\" or path.startswith("\\\\"))):
        raise ConfigError(f"{option} {path!r}: give an absolute Windows folder (D:\\Scratch)")


def _key(path: str) -> str:
    return path.replace("/", "\\").rstrip("\\").lower()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write(report: CanaryReport, out_dir: Path) -> tuple[Path, Path]:
    """The report as JSON and markdown, named after the canary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / report.vm_name
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    md_path.write_text(report.markdown(), encoding="utf-8")
    return json_path, md_path
