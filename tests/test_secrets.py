"""A password never shows in a failure either: a config error about it, a host refusing it, a
move that fails, the store's reasons and the history export (fast); the flow's failed state,
its `hvmove.move.failed` event and its logs on a real Prefect server (slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmove import pipeline, prechecks
from hvmove.config import load
from hvmove.credentials import read_env_file
from hvmove.errors import ConfigError, HvmoveError
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import Lab

SECRET = "hunter2-Zq9!"
HOST = """
  - name: hv01
    address: hv01.corp.example
    auth: kerberos
    username: CORP\\\\svc-hvmove
    password: {password}
"""


@pytest.mark.parametrize(
    "password",
    [
        f"'{SECRET}'",  # the password itself where a reference belongs
        f"[{SECRET}]",
        f"{{value: '{SECRET}'}}",
        f"{{env: X, secret_block: X, extra: '{SECRET}'}}",
        f"{{env: ['{SECRET}']}}",
    ],
)
def test_a_config_error_about_the_password_never_echoes_it(tmp_path: Path, password: str) -> None:
    path = tmp_path / "hvmove.yaml"
    path.write_text("hosts:" + HOST.format(password=password), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "password" in message, message
    assert SECRET not in message and "hunter2" not in message


def _history(lab: Lab) -> str:
    from hvmove.cli import app

    config = str(lab.dir / "hvmove.yaml")
    out = [
        CliRunner().invoke(app, ["history", "--config", config, flag])
        for flag in ("--json", "--csv")
    ]
    assert all(r.exit_code == 0 for r in out), [r.output for r in out]
    return "".join(r.output for r in out)


def _store_text(lab: Lab) -> str:
    return Path(lab.config.store_url().removeprefix("sqlite:///")).read_bytes().decode("latin-1")


def test_a_refused_password_is_in_no_message_record_or_export(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvmove.cli import app

    store = Store(lab.config.store_url())
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    vm = lab.vm("web01")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    monkeypatch.setenv("HVMOVE_LAB_PASSWORD", SECRET)  # the environment wins over .env
    with pytest.raises(HvmoveError) as info, lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, prechecks.Options(probe=False))
    # what the flow records for a failed step
    store.finish(move_id, "failed", f"prechecks: {info.value}")
    plan = lab.dir / "plan.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n")
    cli = CliRunner().invoke(app, ["precheck", str(plan), "--config", str(lab.dir / "hvmove.yaml")])
    assert cli.exit_code == 1 and "credentials rejected" in cli.output, cli.output
    monkeypatch.delenv("HVMOVE_LAB_PASSWORD")
    seen = [str(info.value), repr(info.value), cli.output, _history(lab), _store_text(lab)]
    assert "credentials rejected" in str(info.value)
    leaks = [i for i, text in enumerate(seen) if SECRET in text]
    assert not leaks


def test_a_failed_move_leaves_the_real_password_nowhere(lab: Lab) -> None:
    password = read_env_file(lab.dir / ".env")["HVMOVE_LAB_PASSWORD"]
    store = Store(lab.config.store_url())
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    vm = lab.vm("web01")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    lab.server.engine.inject({"kind": "fail_at", "vm": "web01", "percent": 40})
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, prechecks.Options(probe=False))
        with pytest.raises(pipeline.StepFailed) as info:
            pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
    store.finish(move_id, "failed", f"copy: {info.value}")
    seen = [str(info.value), _history(lab), _store_text(lab)]
    assert "failed" in seen[1]
    assert not [text for text in seen if password in text]


def _events(api: str, since: str) -> list[dict]:
    import httpx

    body = {"filter": {"event": {"prefix": ["hvmove.move"]}, "occurred": {"since": since}}}
    reply = httpx.post(f"{api}/events/filter", json={**body, "limit": 50}, timeout=10)
    reply.raise_for_status()
    return reply.json()["events"]


@pytest.mark.slow
def test_failed_flow_state_event_and_logs_hold_no_password(
    prefect_api: str, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.migrate_vm import migrate_vm

    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 5))
    config = str(lab.dir / "hvmove.yaml")
    password = read_env_file(lab.dir / ".env")["HVMOVE_LAB_PASSWORD"]
    # one move refused by the host (a wrong password), one failing mid-copy (the right one)
    monkeypatch.setenv("HVMOVE_LAB_PASSWORD", SECRET)
    # migrate-vm is a sync flow: called directly, it runs in this process
    refused = migrate_vm(
        host="hv01", vm="web01", destination="E:\\a\\web01", config=config, return_state=True
    )
    monkeypatch.delenv("HVMOVE_LAB_PASSWORD")
    lab.server.engine.inject({"kind": "fail_at", "vm": "sql01", "percent": 30})
    failed = migrate_vm(
        host="hv01",
        vm="sql01",
        destination="E:\\b\\sql01",
        config=config,
        poll_seconds=0.1,
        return_state=True,
    )
    assert refused.is_failed() and failed.is_failed()
    records = Store(lab.config.store_url()).moves()
    run_ids = [r.flow_run_id for r in records if r.flow_run_id]
    deadline = time.monotonic() + 20
    while True:
        events = [e for e in _events(prefect_api, since) if e["event"] == "hvmove.move.failed"]
        if len(events) >= len(records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(events) >= 1
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(i) for i in run_ids]
        time.sleep(2)  # logs are shipped by a batching worker after the run ends
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    seen = [
        refused.message or "",
        failed.message or "",
        *(r.state.message or "" for r in runs),
        *(json.dumps(r.parameters) for r in runs),
        json.dumps(events),
        *(log.message for log in logs),
        *(r.reason for r in records),
        _history(lab),
        _store_text(lab),
    ]
    for secret in (SECRET, password):
        assert not [i for i, text in enumerate(seen) if secret in text]
