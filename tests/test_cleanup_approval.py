"""The approval gate on a real Prefect server: with `cleanup: approve` two moves stop verified with
their sources kept; the cleanup-approval deployment, run by a process worker, lists them in a
table artifact and suspends with a form; resumed through the API with one box ticked, it deletes
that move's source only and the other keeps waiting."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hvmove import approvals
from hvmove.store import Store
from tests.conftest import Lab

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
POOL = "hvmove-approval-test"


def _run(flow: Any, **kwargs: Any) -> Any:
    out = flow(**kwargs, return_state=True)
    return asyncio.run(out) if inspect.iscoroutine(out) else out


def _prefect(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _wait_state(client: Any, run_id: Any, done: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = client.read_flow_run(run_id).state
        if done(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_cleanup_waits_for_approval_in_a_form(prefect_api: str, lab: Lab) -> None:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.migrate_vm import migrate_vm

    config = lab.dir / "hvmove.yaml"
    config.write_text(config.read_text() + "cleanup: approve\n")
    moves = {"web01": "hv01", "dc01": "hv02"}
    src = {
        vm: lab.server.estate.local(host, lab.vm(vm).drives[0].path) for vm, host in moves.items()
    }
    for vm, host in moves.items():
        state = _run(
            migrate_vm,
            host=host,
            vm=vm,
            destination=f"E:\\VMs\\{vm}",
            config=str(config),
            poll_seconds=0.1,
        )
        assert state.is_completed() and state.name == "Awaiting approval", state
    store = Store(lab.config.store_url())
    records = {r.vm_name: r for r in store.moves()}
    for vm in moves:
        r = records[vm]
        assert (r.status, r.reason, r.verified) == ("verified", approvals.REASON, True)
        assert not r.source_removed and src[vm].exists()  # nothing deleted before approval
    from hvmove.cli.deploy import deploy_values

    plan = lab.dir / "plan.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: app01, destination: 'F:\\VMs'}\n")
    env = {
        **os.environ,
        **deploy_values(config, plan, ROOT, POOL),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    _prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", env=env)
    _prefect(
        "--no-prompt",
        "deploy",
        "--name",
        "cleanup-approval",
        "--prefect-file",
        "deployments/prefect.yaml",
        env=env,
    )
    worker = ["worker", "start", "--pool", POOL, "--run-once"]
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("cleanup-approval/cleanup-approval")
        assert dep.schedules and dep.schedules[0].schedule.cron == "0 7 * * *"
        run = client.create_flow_run_from_deployment(dep.id)
        _prefect(*worker, env=env)
        state = _wait_state(client, run.id, lambda s: s.is_paused())
        assert state.is_paused() and state.name == "Suspended", state
        table = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cleanup-approval"]))
        )
        # the form the UI draws: a checkbox per move, plus "approve all verified"
        keyset = state.state_details.run_input_keyset
        schema = client.read_flow_run_input(run.id, keyset["schema"])
    import json

    props = (json.loads(schema) if isinstance(schema, str) else schema)["properties"]
    fields = {approvals.field_name(records[vm].id): vm for vm in moves}
    assert set(props) == {approvals.APPROVE_ALL, *fields}
    assert all(p["type"] == "boolean" for p in props.values())
    assert props[approvals.field_name(records["web01"].id)]["title"].startswith("web01 on hv01")
    data = table[0].data if isinstance(table[0].data, list) else json.loads(table[0].data)
    assert {row["vm"] for row in data} == set(moves)
    # the server announced the suspension (what the reminder automation waits for)
    body = {"filter": {"resource": {"id": [f"prefect.flow-run.{run.id}"]}}, "limit": 50}
    deadline = time.monotonic() + 20
    while True:
        reply = httpx.post(f"{prefect_api}/events/filter", json=body, timeout=10)
        names = [e["event"] for e in reply.json()["events"]]
        if "prefect.flow-run.Suspended" in names or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "prefect.flow-run.Suspended" in names, names
    # approve web01 only, through the API (what the UI's Resume form sends)
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(run.id, run_input={approvals.field_name(records["web01"].id): True})
    with get_client(sync_client=True) as client:
        _prefect(*worker, env=env)
        state = _wait_state(client, run.id, lambda s: s.is_final())
        assert state.is_completed(), state
        assert "cleaned up 1 move(s), 1 still awaiting approval" in state.message
    web01, dc01 = store.get(records["web01"].id), store.get(records["dc01"].id)
    assert web01.status == "completed" and web01.source_removed and not src["web01"].exists()
    assert dc01.status == "verified" and not dc01.source_removed and src["dc01"].exists()
    assert [r.id for r in approvals.awaiting(store)] == [dc01.id]
