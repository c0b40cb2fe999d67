"""The deployed paths that go wrong at night, on a real `prefect server` and a real `prefect
worker` started with an empty environment outside the project folder (no mocks of Prefect):

- what a worker gets from `{{ $VAR }}` templates: Prefect 3.9 fills them at deploy time from the
  deploying shell; one left unset there is filled on the worker at run time (empty);
- a night that starts after its window closed ends Skipped with the reason;
- an overlapping night is cancelled by the server (CANCEL_NEW), not queued;
- a cancel Hyper-V refuses: the job finishes, the record says so, the next run verifies it;
- a host that falls silent mid-copy fails the copy step within its bound, the rerun attaches.

Each test brings its own lab (its config and plan are run parameters), so they share only the
server, the deployments and the worker."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hvmove import cancel
from hvmove.store import Store
from tests.conftest import Lab, make_lab
from tests.test_deployment import (
    BIN,
    clean_env,
    hvmove_deploy,
    start_worker,
    stop_worker,
    wait_final,
)

# Both modules deploy the same deployment names (nightly-migrations/nightly, migrate-vm) to the
# session's Prefect server, and a deployment's concurrency limit spans them: in one xdist worker,
# one module after the other (./dev runs --dist loadgroup), never interleaved.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect-deployments")]

POOL = "hvmove-edges"  # its own pool: the scale-out test counts the workers of "hvmove"


@dataclass
class Edges:
    api: str
    home: Path

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace")[-3000:] for p in self.home.glob("*.log"))


@pytest.fixture(scope="module")
def edges(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    lab = make_lab(tmp_path_factory.mktemp("edges-lab"))
    plan = lab.dir / "nightly.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
    try:
        hvmove_deploy(prefect_api, lab.dir / "hvmove.yaml", plan, pool=POOL)
    finally:
        lab.server.stop()  # the deployments keep its paths; each test passes its own lab's
    home = tmp_path_factory.mktemp("edges-worker")
    # a night and its move run at once, plus the night that collides with them
    worker = start_worker(prefect_api, home, "edge", pool=POOL, limit=4)
    try:
        yield Edges(prefect_api, home)
    finally:
        stop_worker(worker)


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run(name: str, lab: Lab, state: Any = None, **params: Any):
    with _client() as client:
        deployment = client.read_deployment_by_name(name)
        return client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"config": str(lab.dir / "hvmove.yaml"), **params},
            state=state,
        )


def _move(lab: Lab, **params: Any):
    return _run(
        "migrate-vm/migrate-vm",
        lab,
        host="hv01",
        vm="web01",
        destination="F:\\VMs\\web01",
        poll_seconds=0.5,
        **params,
    )


def _until(predicate, what: str, timeout: float = 120, logs: Edges | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{logs.logs() if logs else ''}"
        time.sleep(0.2)


def _copying(lab: Lab, vm: str, percent: int, edges: Edges) -> None:
    jobs = lab.server.engine.jobs_of
    _until(lambda: any(j.percent >= percent for j in jobs(lab.vm(vm).id)), "no copy", logs=edges)


def _starts(lab: Lab, vm: str) -> int:
    vm_id = lab.vm(vm).id
    calls = lab.server.scripts.calls
    return sum(1 for c in calls if c[1] == "Start-StorageMove" and c[2].get("VmId") == vm_id)


def _record(lab: Lab, vm: str):
    return next(r for r in Store(lab.config.store_url()).moves() if r.vm_name == vm)


# -- 1. templates: what the worker gets --------------------------------------------------------
def _templates(value: Any, where: str = "") -> list[str]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _templates(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _templates(v, f"{where}[{i}]")]
    return [f"{where} = {value}"] if isinstance(value, str) and "{{" in value else []


def test_the_deployments_as_stored_hold_no_template(edges: Edges) -> None:
    """Deployed from a shell without one HVMOVE_* variable: nothing is left for a worker to
    fill from its own environment (Prefect fills what remains at run time, as shown below)."""
    names = [
        "nightly-migrations/nightly",
        "migrate-vm/migrate-vm",
        "inventory-snapshot/inventory",
        "cleanup-approval/cleanup-approval",
    ]
    with _client() as client:
        for name in names:
            d = client.read_deployment_by_name(name)
            stored = {
                "parameters": d.parameters,
                "job_variables": d.job_variables,
                "pull_steps": d.pull_steps,
                "schedules": [s.schedule.model_dump(mode="json") for s in d.schedules],
            }
            assert _templates(stored, name) == [], stored
            assert d.job_variables["working_dir"] == str(BIN.parents[1])  # the project folder
            assert not d.pull_steps


PROBE_FLOW = 'from prefect import flow\n\n\n@flow\ndef probe() -> str:\n    return "ran"\n'


def _deploy_probe(edges: Edges, folder: Path, name: str, shell: dict[str, str]) -> Any:
    """The pull step hvmove's deployment had until it was replaced (a run-time
    set_working_directory templated with an environment variable), deployed with Prefect's own
    `prefect deploy` from the shell SHELL."""
    spec = {
        "name": "probe",
        "pull": [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PROBE_DIR }}"}}
        ],
        "deployments": [
            {"name": name, "entrypoint": "probe.py:probe", "work_pool": {"name": POOL}}
        ],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", f"{name}.yaml"],
        cwd=folder,
        env={**clean_env(edges.api, edges.home), **shell},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with _client() as client:
        d = client.read_deployment_by_name(f"probe/{name}")
        run = client.create_flow_run_from_deployment(d.id)
    return d.pull_steps[0]["prefect.deployments.steps.set_working_directory"], run


def test_a_pull_step_template_is_filled_when_deploying_and_left_empty_on_the_worker(
    edges: Edges, tmp_path: Path
) -> None:
    """Why issue 8's run-time pull step passed the empty-environment test: Prefect 3.9's
    `prefect deploy` fills `{{ $VAR }}` in pull steps from the DEPLOYING shell
    (cli/deploy/_core.py: `apply_values(pull_steps, step_outputs)`, whose `$` placeholders read
    os.environ). Only a variable unset there is stored as a template, and the worker's flow
    process fills it from ITS environment (deployments/steps/core.py run_step: `apply_values`
    with remove_notset): empty on a worker without it, so set_working_directory('') stays in
    the run's temporary folder (pull.py resolves a relative path against it) and the flow's
    code is not found: the run crashes before the flow loads.
    hvmove deploy gives Prefect every variable and stores no pull step (test above)."""
    project = tmp_path / "code"
    project.mkdir()
    (project / "probe.py").write_text(PROBE_FLOW)
    filled, good = _deploy_probe(edges, project, "filled", {"PROBE_DIR": str(project)})
    left, bad = _deploy_probe(edges, project, "left", {})
    assert filled == {"directory": str(project)}  # a literal: the worker needs nothing
    assert left == {"directory": "{{ $PROBE_DIR }}"}  # filled by the worker, at run time
    good, bad = wait_final(good.id, timeout=120), wait_final(bad.id, timeout=120)
    assert good.state.is_completed(), (good.state, edges.logs())
    assert not bad.state.is_completed() and bad.state.type.value in ("CRASHED", "FAILED")
    # the empty directory resolves to the run's temporary folder: the code is not there
    assert re.search(r"No such file or directory: '[^']*prefect/probe\.py'", edges.logs())


# -- 2. late and overlapping nights --------------------------------------------------------------
def test_a_night_that_starts_after_its_window_closed_is_skipped(
    edges: Edges, tmp_path: Path
) -> None:
    from prefect.states import Scheduled

    lab = make_lab(tmp_path)
    try:
        plan = lab.dir / "plan.yaml"
        plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
        # the lab's window is 22:00-05:00 UTC: the night of two days ago, picked up only now
        # (its worker was down); Prefect runs a run that is due late as soon as it can
        due = (datetime.now(UTC) - timedelta(days=2)).replace(hour=22, minute=0, second=0)
        night = _run(
            "nightly-migrations/nightly",
            lab,
            state=Scheduled(scheduled_time=due),
            plan=str(plan),
            poll_seconds=0.5,
        )
        night = wait_final(night.id, timeout=120)
        assert night.state.is_cancelled() and night.state.name == "Skipped", night.state
        message = night.state.message or ""
        assert "after the window it was scheduled for" in message, message
        assert f"{due:%Y-%m-%dT22:00}" in message and "the next scheduled night" in message
        assert night.start_time is not None  # it ran on the worker and decided, not the server
        assert not lab.server.engine.jobs_of(lab.vm("web01").id)  # nothing started
        assert Store(lab.config.store_url()).moves() == []
    finally:
        lab.server.stop()


def test_an_overlapping_night_is_cancelled_by_the_server_not_queued(
    edges: Edges, tmp_path: Path
) -> None:
    lab = make_lab(tmp_path, rate_scale=2)  # web01 to F: copies for about a minute
    try:
        plan = lab.dir / "plan.yaml"
        plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
        params = {"plan": str(plan), "window": "now", "poll_seconds": 0.5}
        first = _run("nightly-migrations/nightly", lab, **params)
        _copying(lab, "web01", 2, edges)
        second = wait_final(_run("nightly-migrations/nightly", lab, **params).id, timeout=120)
        with _client() as client:
            still = client.read_flow_run(first.id).state
        assert still.is_running(), still  # the collision happened while the first ran
        # cancelled at once by the server's deployment concurrency rule: it never ran, never
        # waited in AwaitingConcurrencySlot or Late for the first to end
        assert second.state.is_cancelled(), second.state
        assert "concurrency limit" in (second.state.message or ""), second.state
        with _client() as client:
            history = [st.type.value for st in client.read_flow_run_states(second.id)]
        assert "RUNNING" not in history and second.run_count == 0, history
        lab.server.control("settings", {"rate_scale": 40})
        first = wait_final(first.id, timeout=180)
        assert first.state.is_completed(), (first.state, edges.logs())
        assert _starts(lab, "web01") == 1
    finally:
        lab.server.stop()


# -- 3. past the point of no return --------------------------------------------------------------
def test_a_cancel_hyper_v_refuses_leaves_the_job_to_finish_and_the_next_run_verifies(
    edges: Edges, tmp_path: Path
) -> None:
    from prefect.states import Cancelling

    lab = make_lab(tmp_path, rate_scale=1)  # the copy outlasts the kill and the hook's process
    try:
        vm = lab.vm("web01")
        # Cancellable reads true, but RequestStateChange(4) answers 32775 (reference hyperv.md
        # §2.4: Cancellable "does not guarantee the cancel succeeds")
        lab.server.control(
            "engine_fault", {"kind": "refuse_stop", "vm": "web01", "cancellable": True}
        )
        run = _move(lab)
        _copying(lab, "web01", 2, edges)
        with _client() as client:
            client.set_flow_run_state(run.id, Cancelling(message="change freeze"), force=True)
        assert wait_final(run.id, timeout=120).state.is_cancelled()
        _until(
            lambda: _record(lab, "web01").reason.startswith(cancel.LEFT_TO_FINISH),
            "the cancel hook never said the job is left to finish",
            logs=edges,
        )
        record = _record(lab, "web01")
        assert record.status in ("pending", "running"), record.status  # open, not cancelled
        assert "change freeze" in record.reason and "32775" in record.reason, record.reason
        assert lab.server.engine.jobs_of(vm.id)[-1].state in ("Running", "Completed")
        lab.server.control("settings", {"rate_scale": 40})
        _until(lambda: lab.server.engine.jobs_of(vm.id)[-1].state == "Completed", "no switch")
        # the next run of the same move resumes the open record: verifies, cleans up, done
        again = wait_final(_move(lab).id, timeout=180)
        assert again.state.is_completed(), (again.state, edges.logs())
        record = _record(lab, "web01")
        assert record.status == "completed" and record.verified, (record.status, record.reason)
        assert _starts(lab, "web01") == 1
        with lab.client() as client:
            assert client.vm_paths(vm.id).disk_paths[0].startswith("F:\\")
    finally:
        lab.server.stop()


# -- 4. bounded waits ----------------------------------------------------------------------------
def test_a_silent_host_fails_the_copy_within_its_bound_and_the_rerun_attaches(
    edges: Edges, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    lab = make_lab(tmp_path, rate_scale=1)
    try:
        doc = yaml.safe_load((lab.dir / "hvmove.yaml").read_text())
        doc.setdefault("defaults", {})["host_silence_minutes"] = 0.05  # 3 s
        config = lab.dir / "hvmove-silence.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        run = _move(lab, config=str(config))
        _copying(lab, "web01", 2, edges)
        lab.server.endpoint.kill_host("hv01")
        # without a bound the copy step asks a dead host for ever: the run would never end
        run = wait_final(run.id, timeout=120)
        assert run.state.is_failed(), run.state
        with _client() as client:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
        copy = next(t for t in tasks if t.name.startswith("copy-"))
        message = copy.state.message or ""
        assert copy.state.is_failed() and "HostSilent" in message, copy.state
        assert "host hv01 has not answered for" in message, message
        assert copy.run_count == 1  # its bound already waited: not retried in place
        job = lab.server.engine.jobs_of(lab.vm("web01").id)[-1]
        assert job.state == "Running"  # Hyper-V copies on while the host is unreachable
        assert _record(lab, "web01").job_id == job.job_id  # kept: the rerun attaches
        lab.server.endpoint.revive_host("hv01")
        lab.server.control("settings", {"rate_scale": 4})
        again = wait_final(_move(lab, config=str(config)).id, timeout=180)
        assert again.state.is_completed(), (again.state, edges.logs())
        assert _starts(lab, "web01") == 1  # attached to the job, never a second copy
        assert _record(lab, "web01").status == "completed"
    finally:
        lab.server.stop()
