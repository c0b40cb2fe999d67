"""deployments/prefect.yaml registers on a real Prefect server, and a run of the nightly
deployment, picked up by a process worker, moves a lab VM and completes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvmove.store import Store
from tests.conftest import Lab

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def prefect(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    exe = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run(
        [exe, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_nightly_deployment_runs_on_a_worker(prefect_api: str, lab: Lab) -> None:
    from prefect.client.orchestration import get_client

    plan = lab.dir / "nightly.yaml"
    plan.write_text(
        "moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n"
        "  - {host: hv01, vm: iso01, destination: 'E:\\VMs\\iso01'}\n"
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "HVMOVE_PROJECT_DIR": str(ROOT),
        "HVMOVE_CONFIG": str(lab.dir / "hvmove.yaml"),
        "HVMOVE_PLAN": str(plan),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    prefect("work-pool", "create", "hvmove", "--type", "process", env=env)
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", env=env)
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-migrations/nightly")
        inventory = client.read_deployment_by_name("inventory-snapshot/inventory")
        assert nightly.parameters["plan"] == str(plan)  # filled in at deploy time
        assert nightly.schedules[0].schedule.cron == "0 22 * * *"
        assert inventory.entrypoint == "flows/inventory.py:inventory_snapshot"
        # tonight's window would keep the run waiting until 22:00: run it with 'now'
        run = client.create_flow_run_from_deployment(
            nightly.id, parameters={"window": "now", "poll_seconds": 0.5}
        )
    worker = subprocess.run(
        [
            str(Path(sys.executable).with_name("prefect")),
            "worker",
            "start",
            "--pool",
            "hvmove",
            "--run-once",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = client.read_flow_run(run.id).state
            if state.is_final():
                break
            time.sleep(1)
        assert state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    moves = {r.vm_name: r for r in Store(lab.config.store_url()).moves()}
    assert moves["web01"].status == "completed" and moves["web01"].verified
    assert moves["web01"].batch and moves["web01"].batch.startswith("night-")
    assert "iso01" not in moves or moves["iso01"].status != "completed"
