"""hvmove's automations on a real Prefect server: `hvmove automations apply` creates them, a second
apply changes nothing, and each one fires into a local HTTP sink standing in for the team's
webhook (a Prefect Custom Webhook notification block): a blocked move, a copy that goes silent in
the lab, a nightly deployment that never starts, a flow run whose heartbeats stop (marked
Crashed) and a cleanup approval left waiting."""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Lab, make_lab

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


class Sink:
    """A local webhook: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.bodies.append(json.loads(data or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, text: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if text in body.get("subject", ""):
                    return body
            time.sleep(0.25)
        raise AssertionError(f"no notification {text!r}; got {[b['subject'] for b in self.bodies]}")


@pytest.fixture
def sink(prefect_api: str) -> Iterator[Sink]:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    s = Sink()
    CustomWebhookNotificationBlock(
        name="hvmove test sink",
        url=s.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save("hvmove-test-sink", overwrite=True)
    yield s
    # the session's server serves other tests: leave no automation behind (the zombie one
    # would crash their runs, the others would notify a sink that is gone)
    with get_client(sync_client=True) as client:
        for auto in client.read_automations():
            if auto.name.startswith("hvmove: "):
                client.delete_automation(auto.id)
    s.server.shutdown()


def _configure(lab: Lab, **notify: float) -> Path:
    import yaml

    path = lab.dir / "hvmove.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["notifications"] = {"block": "custom-webhook/hvmove-test-sink", **notify}
    path.write_text(yaml.safe_dump(doc))
    return path


def _apply(config: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "hvmove.cli", "automations", "apply", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {c["name"]: c["action"] for c in json.loads(done.stdout)["changes"]}


def _emit(event: str, run_id: str, run_name: str, flow: str) -> None:
    from prefect.events import emit_event

    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.name": run_name,
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            }
        ],
    )


def test_automations_apply_and_fire(prefect_api: str, sink: Sink, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.migrate_vm import migrate_vm

    lab = make_lab(tmp_path, rate_scale=8)  # web01 to F: takes about 10 s
    try:
        config = _configure(
            lab,
            silence_minutes=10 / 60,
            nightly_missed_hours=12 / 3600,
            zombie_minutes=10 / 60,
            approval_reminder_hours=10 / 3600,
        )
        names = {
            "hvmove: move failed",
            "hvmove: move silent",
            "hvmove: nightly did not start",
            "hvmove: crash zombie runs",
            "hvmove: cleanup approvals waiting",
        }
        assert _apply(config) == dict.fromkeys(names, "create")
        assert _apply(config) == dict.fromkeys(names, "unchanged")  # idempotent
        # zombie: a migrate-vm run that sent one heartbeat and then nothing
        with get_client(sync_client=True) as client:
            zombie = client.create_flow_run(migrate_vm, name="zombie-move", state=Running())
        _emit("prefect.flow-run.heartbeat", str(zombie.id), zombie.name, "migrate-vm")
        # an approval run that suspended and is still waiting
        waiting = uuid.uuid4()
        _emit("prefect.flow-run.Suspended", str(waiting), "approval-waiting", "cleanup-approval")
        # a move that prechecks block: hvmove.move.failed from the real flow
        state = migrate_vm(
            host="hv01",
            vm="iso01",
            destination="E:\\VMs\\iso01",
            config=str(config),
            return_state=True,
        )
        assert state.name == "Blocked", state
        failed = sink.wait_for("move of iso01 on hv01 blocked")
        assert "attached ISO" in failed["body"] and "prechecks" in failed["body"]
        # a copy that goes silent: the host stops answering status queries mid-copy
        vm = lab.vm("web01")
        # the thread gets this context: the session's Prefect settings live in a contextvar
        moving = threading.Thread(
            target=contextvars.copy_context().run,
            args=[
                lambda: migrate_vm(
                    host="hv01",
                    vm="web01",
                    destination="F:\\VMs\\web01",
                    config=str(config),
                    poll_seconds=0.2,
                    return_state=True,
                )
            ],
        )
        moving.start()
        deadline = time.monotonic() + 60
        while not any(j.percent >= 5 for j in lab.server.engine.jobs_of(vm.id)):
            assert time.monotonic() < deadline, "the copy did not start"
            time.sleep(0.1)
        time.sleep(1)  # let the progress event reach the server
        lab.server.scripts.delays["Get-StorageMoveStatus"] = 20.0
        try:
            silent = sink.wait_for("no progress from the move of web01 on hv01")
        finally:
            lab.server.scripts.delays.clear()
        assert "Last progress:" in silent["body"]
        moving.join(120)
        assert not moving.is_alive()
        sink.wait_for("the nightly migrations did not start")
        sink.wait_for("source cleanups are waiting for approval")
        sink.wait_for("lost its process")
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(zombie.id).state.is_crashed()
        # a change in the config is an update of the one automation it touches
        config = _configure(
            lab,
            silence_minutes=20,
            nightly_missed_hours=12 / 3600,
            zombie_minutes=10 / 60,
            approval_reminder_hours=10 / 3600,
        )
        changed = _apply(config)
        assert changed.pop("hvmove: move silent") == "update"
        assert set(changed.values()) == {"unchanged"}
    finally:
        lab.server.stop()


def test_apply_without_block_is_one_clear_line(prefect_api: str, lab: Lab) -> None:
    config = _configure(lab)
    text = config.read_text().replace("custom-webhook/hvmove-test-sink", "no-such-block")
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "hvmove.cli", "automations", "apply", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "no Prefect notification block named 'no-such-block'" in done.stderr
    assert "Traceback" not in done.stderr
