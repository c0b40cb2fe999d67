"""The migrate-vm flow on a real Prefect server: what the UI shows is stored (flow run, five task
runs, artifacts, events), and a process killed mid-move is finished by a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hvmove.store import Store
from tests.conftest import Lab, make_lab

pytestmark = pytest.mark.slow


def _events(api: str, since: str, prefix: str = "hvmove.move") -> list[dict]:
    body = {"filter": {"event": {"prefix": [prefix]}, "occurred": {"since": since}}, "limit": 50}
    reply = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()["events"]


def test_move_is_visible_in_prefect(prefect_api: str, lab: Lab) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    from flows.migrate_vm import migrate_vm

    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 5))
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination="E:\\VMs\\web01",
        config=str(lab.dir / "hvmove.yaml"),
        poll_seconds=0.1,
        return_state=True,
    )
    assert state.is_completed(), state
    record = Store(lab.config.store_url()).moves()[0]
    assert record.status == "completed" and record.verified and record.source_removed
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(record.flow_run_id)
        assert run.name == "move web01 on hv01 to E:\\VMs\\web01"
        assert run.state.is_completed()
        # task runs reach the server as events, recorded some time after the run ends
        deadline = time.monotonic() + 30
        while True:
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]))
            )
            done = [t for t in tasks if t.state and t.state.is_completed()]
            if len(done) >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sorted(t.name for t in tasks) == sorted(
            f"{s}-web01" for s in ("prechecks", "copy", "cutover", "verify", "cleanup")
        )
        assert all(t.state.is_completed() for t in tasks)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
        kinds = {a.type for a in artifacts}
        assert {"table", "progress", "markdown"} <= kinds, kinds
        table = next(a for a in artifacts if a.type == "table")
        assert table.key == "prechecks-web01-hv01"
        progress = next(a for a in artifacts if a.type == "progress")
        assert float(progress.data) == 100.0
        report = next(a for a in artifacts if a.type == "markdown")
        assert "**Status:** completed" in report.data and "Test-VHD" in report.data
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # the session's server also holds other tests' moves: keep this move's events only
        events = [
            e for e in _events(prefect_api, since) if e["payload"].get("move_id") == record.id
        ]
        names = [e["event"] for e in events]
        if names.count("hvmove.move.step.completed") >= 5 and "hvmove.move.completed" in names:
            break
        time.sleep(0.5)
    assert "hvmove.move.started" in names
    assert names.count("hvmove.move.step.completed") == 5, names
    done = next(e for e in events if e["event"] == "hvmove.move.completed")
    assert done["resource"]["hvmove.host"] == "hv01" and done["resource"]["hvmove.vm"] == "web01"
    assert done["payload"]["bytes"] == record.bytes_total > 0
    assert done["payload"]["verified"] is True
    # the host's password reaches WinRM only: not the run's parameters, logs, artifacts, events
    # or the store
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from hvmove.credentials import read_env_file

    password = read_env_file(lab.dir / ".env")["HVMOVE_LAB_PASSWORD"]
    # logs reach the server through Prefect's batching log worker, some time after the run ends
    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
            if len(logs) > 10 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert len(logs) > 10
    seen = [
        json.dumps(run.parameters),
        *(log.message for log in logs),
        *(json.dumps(a.data) for a in artifacts),
        json.dumps(events),
    ]
    seen.append(
        Path(lab.config.store_url().removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    )
    assert not [text for text in seen if password in text]


def test_blocked_move_fails_before_anything_changes(prefect_api: str, lab: Lab) -> None:
    from flows.migrate_vm import migrate_vm

    state = migrate_vm(
        host="hv01",
        vm="iso01",
        destination="E:\\VMs\\iso01",
        config=str(lab.dir / "hvmove.yaml"),
        return_state=True,
    )
    # its own named state, not a crash-red Failed
    assert state.name == "Blocked" and not state.is_failed(), state
    assert "attached ISO" in state.message
    assert lab.server.engine.jobs_of(lab.vm("iso01").id) == []
    record = Store(lab.config.store_url()).moves()[0]
    assert record.status == "blocked" and "attached ISO" in record.reason


# -- crash and rerun ------------------------------------------------------------------------------
def _migrate(lab: Lab, plan: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hvmove.cli",
            "migrate",
            str(plan),
            "--config",
            str(lab.dir / "hvmove.yaml"),
            "--poll",
            "0.2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
        start_new_session=True,
    )


def _wait_for(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def _step_running(store: Store, step: str) -> bool:
    return any(store.step_states(r.id).get(step) == "running" for r in store.moves())


@pytest.mark.parametrize("kill_at", ["copy", "verify", "cleanup"])
def test_killed_mid_step_then_rerun_finishes(
    prefect_api: str, tmp_path: Path, kill_at: str
) -> None:
    lab = make_lab(tmp_path, rate_scale=8)  # web01 to F: takes about 10 s
    try:
        vm = lab.vm("web01")
        source = lab.server.estate.local("hv01", vm.drives[0].path)
        plan = tmp_path / "plan.yaml"
        plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
        store = Store(lab.config.store_url())
        if kill_at == "verify":
            lab.server.control("script_delay", {"script": "Get-VHDFacts", "seconds": 3})
        if kill_at == "cleanup":
            lab.server.control("script_delay", {"script": "Remove-StorageFiles", "seconds": 3})
        first = _migrate(lab, plan)
        if kill_at == "copy":
            _wait_for(lambda: any(j.percent >= 15 for j in lab.server.engine.jobs_of(vm.id)))
        else:
            _wait_for(lambda: _step_running(store, kill_at))
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        record = store.moves()[0]
        assert record.status == "running"  # the record stops where the process died
        if kill_at in ("copy", "verify"):
            assert source.exists()  # nothing is deleted before verification
        lab.server.scripts.delays.clear()
        second = _migrate(lab, plan)
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out.decode()[-3000:]
        record = store.get(record.id)
        assert record.status == "completed" and record.verified and record.source_removed
        assert len(lab.server.engine.jobs_of(vm.id)) == 1  # never a second Move-VMStorage
        starts = [c for c in lab.server.scripts.calls if c[1] == "Start-StorageMove"]
        assert len(starts) == 1, starts  # the rerun looked first and attached or skipped
        assert not source.exists()
        assert lab.server.engine.lost_writes(vm.id)["lost"] == 0
        paths = lab.client().vm_paths(vm.id)
        assert paths.disk_paths[0].startswith("F:\\VMs\\web01\\")
    finally:
        lab.server.stop()
