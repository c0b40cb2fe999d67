"""The nightly batch against the lab: the schedule, the window, overrun cancellation, and the
inventory flow and history export that feed capacity analysis."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hvmove import planner
from hvmove.cli import app
from hvmove.store import Store
from tests.conftest import Lab, make_lab

GiB = 1024**3

PLAN = (
    "moves:\n"
    "  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n"
    "  - {host: hv01, vm: sql01, destination: 'F:\\VMs\\sql01'}\n"
    "  - {host: hv01, vm: iso01, destination: 'E:\\VMs\\iso01'}\n"
    "  - {host: hv02, vm: dc01, destination: 'E:\\VMs\\dc01'}\n"
)


def write_plan(lab: Lab, text: str = PLAN) -> Path:
    path = lab.dir / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_plan_command_schedules_defers_and_blocks(lab: Lab) -> None:
    plan = write_plan(lab)
    runner = CliRunner()
    wide = runner.invoke(
        app,
        ["plan", str(plan), "--config", str(lab.dir / "hvmove.yaml"), "--window", "now", "--json"],
    )
    assert wide.exit_code == 0, wide.output
    data = json.loads(wide.output)
    assert sorted(m["vm"] for m in data["admitted"]) == ["dc01", "sql01", "web01"]
    assert [b["vm"] for b in data["blocked"]] == ["iso01"]
    starts = {m["vm"]: m["start"] for m in data["admitted"]}
    assert all(m["finish_p90"] <= data["window"][2] for m in data["admitted"])
    # a short window admits what fits at P90 and says why the rest waits
    tight = runner.invoke(
        app,
        [
            "plan",
            str(plan),
            "--config",
            str(lab.dir / "hvmove.yaml"),
            "--window",
            "now+0.15",
            "--margin",
            "0",
            "--json",
        ],
    )
    assert tight.exit_code == 0, tight.output
    deferred = json.loads(tight.output)["deferred"]
    assert deferred and all(d["reason"] == "window" for d in deferred)
    assert "at P90" in deferred[0]["detail"]
    assert starts  # nothing was moved by planning
    assert Store(lab.config.store_url()).moves() == []


@pytest.mark.slow
def test_nightly_defers_what_the_window_cannot_fit(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.nightly import nightly

    lab = make_lab(tmp_path, rate_scale=4)  # F: at 1 GB/s: web01 ~25 s, sql01 ~75 s
    plan = write_plan(lab)
    replans: list[list[planner.RunningMove]] = []
    real_plan = planner.plan

    def spy(*args: Any, **kw: Any) -> planner.Schedule:
        replans.append(list(kw.get("running", ())))
        return real_plan(*args, **kw)

    monkeypatch.setattr(planner, "plan", spy)
    from flows import nightly as night_module

    wakes: list[Callable[[], bool]] = []  # what, besides a run's end, each wait watched for
    real_wait = night_module._wait_any

    def wait_spy(jobs: Any, timeout: float, changed: Callable[[], bool] = lambda: False) -> None:
        wakes.append(changed)
        real_wait(jobs, timeout, changed)

    monkeypatch.setattr(night_module, "_wait_any", wait_spy)
    state = nightly(
        plan=str(plan),
        config=str(lab.dir / "hvmove.yaml"),
        window="now+1",
        margin_minutes=0,
        poll_seconds=0.3,
        return_state=True,
    )
    lab.server.stop()
    summary = state.result()
    # the night's waits watched for its copies' ends: those begun before the last copy ended
    # see it now (it wakes as a copy ends, not when its run does)
    assert wakes and wakes[0]()
    # blocked and deferred moves: Completed, but the state's name says so
    assert state.is_completed() and state.name == "Completed with 1 blocked, 1 deferred", state
    moved = {m["vm"] for m in summary["moved"]}
    deferred = {m["vm"]: m["reason"] for m in summary["deferred"]}
    assert "sql01" in deferred and "window" in deferred["sql01"]  # ~69 GiB: too long at P90
    assert {"web01", "dc01"} <= moved
    assert [b["vm"] for b in summary["blocked"]] == ["iso01"]
    assert summary["failed"] == []
    records = {r.vm_name: r for r in Store(lab.config.store_url()).moves()}
    assert "sql01" not in records  # a deferred move is not started at all
    assert records["web01"].batch == records["dc01"].batch
    # the night re-planned with what its copies had left (read from the store's samples)
    seen = [r for running in replans for r in running if r.bytes_left is not None]
    assert seen and all(0 <= r.bytes_left <= 100 * GiB for r in seen)


@pytest.mark.slow
def test_nightly_cancels_a_move_that_would_overrun(prefect_api: str, tmp_path: Path) -> None:
    from flows.nightly import nightly

    lab = make_lab(tmp_path, rate_scale=8)
    try:
        plan = write_plan(lab, "moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\w'}\n")
        web = lab.vm("web01")

        def slow_down() -> None:
            while not lab.server.engine.jobs_of(web.id):
                time.sleep(0.1)
            # the storage array slows down after the start: at this pace it ends long after
            lab.server.control("settings", {"rate_scale": 0.5})

        threading.Thread(target=slow_down, daemon=True).start()
        state = nightly(
            plan=str(plan),
            config=str(lab.dir / "hvmove.yaml"),
            window="now+1.5",
            margin_minutes=0,
            cancel_overrun=True,
            poll_seconds=0.3,
            return_state=True,
        )
        summary = state.result(raise_on_failure=False)
        assert summary["moved"] == []
        # stopped on purpose, with the reason: cancelled, not failed (the night is not Failed)
        assert summary["failed"] == [], summary
        assert state.is_completed() and "1 cancelled" in state.name, state
        record = next(r for r in Store(lab.config.store_url()).moves() if r.vm_name == "web01")
        assert record.status == "cancelled", (record.status, record.reason)
        assert record.reason.startswith("window overrun") and "after the window" in record.reason
        job = lab.server.engine.jobs_of(web.id)[0]
        assert job.state == "Terminated"
        with lab.client() as client:  # safely cancelled: still on the source, nothing left behind
            assert client.vm_paths(web.id).disk_paths[0].startswith("D:\\")
        assert not [p for p in (lab.dir / "hosts/hv01/F").rglob("*") if p.is_file()]
    finally:
        lab.server.stop()


@pytest.mark.slow
def test_inventory_flow_records_a_snapshot(prefect_api: str, lab: Lab) -> None:
    from flows.inventory import inventory_snapshot
    from hvmove import analysis

    result = inventory_snapshot(config=str(lab.dir / "hvmove.yaml"))
    assert result["hosts"] == 2 and result["failed"] == []
    fill = analysis.volume_fill(lab.config.store_url())
    assert {"hv01", "hv02"} == set(fill["host"])
    growth = analysis.vm_growth(lab.config.store_url())
    assert set(growth["vm_name"]) == {"web01", "sql01", "app01", "iso01", "dc01"}


def test_history_export_json_and_csv(lab: Lab) -> None:
    from hvmove import pipeline, prechecks
    from hvmove.models import MoveRequest

    store = Store(lab.config.store_url())
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    record = store.open_move(
        host="hv01", vm_id=lab.vm("web01").id, vm_name="web01", request=req.model_dump(mode="json")
    )
    with lab.client() as c:
        for step, run in (
            (
                "prechecks",
                lambda: pipeline.run_prechecks(
                    c, store, record.id, req, prechecks.Options(probe_mib=8)
                ),
            ),
            ("copy", lambda: pipeline.run_copy(c, store, record.id, req, poll_s=0.05)),
        ):
            store.step_started(record.id, step)
            run()
            store.step_ended(record.id, step, "completed")
    store.finish(record.id, "completed")
    runner = CliRunner()
    config = str(lab.dir / "hvmove.yaml")
    as_json = json.loads(runner.invoke(app, ["history", "--config", config, "--json"]).output)
    row = as_json["moves"][0]
    assert (row["vm"], row["status"], row["destination"]) == (
        "web01",
        "completed",
        "E:\\VMs\\web01",
    )
    assert row["bytes"] > 0 and row["copy_seconds"] > 0 and row["odx"] is True
    assert row["steps"] == {"prechecks": "completed", "copy": "completed"}
    rows = list(
        csv.DictReader(
            io.StringIO(runner.invoke(app, ["history", "--config", config, "--csv"]).output)
        )
    )
    assert rows[0]["vm"] == "web01" and rows[0]["steps"] == "prechecks=completed;copy=completed"


@pytest.mark.slow
def test_migrate_exit_code_says_moves_were_blocked(prefect_api: str, lab: Lab) -> None:
    """0 all admitted moves completed, 2 some blocked/deferred/cancelled, 1 any failed; the
    codes are in --help."""
    help_text = CliRunner().invoke(app, ["migrate", "--help"]).output
    assert "Exit codes: 0 every admitted move completed; 2 some moves" in " ".join(
        help_text.split()
    )
    plan = write_plan(
        lab,
        "moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n"
        "  - {host: hv01, vm: iso01, destination: 'E:\\VMs\\iso01'}\n",
    )
    result = CliRunner().invoke(
        app,
        ["migrate", str(plan), "--config", str(lab.dir / "hvmove.yaml"), "--poll", "0.2"],
    )
    assert result.exit_code == 2, result.output
    moves = {r.vm_name: r.status for r in Store(lab.config.store_url()).moves()}
    assert moves["web01"] == "completed" and "iso01" in result.output


@pytest.mark.slow
def test_a_night_that_crashes_mid_night_still_publishes_its_report(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8 point 3: the report is written in a `finally`, so a night that crashes after a
    move finished (here: re-learning raises, as a store gone away would) still says what moved
    and why it stopped, on the server, under the night's own run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    import flows.nightly
    from flows.nightly import nightly

    def store_gone(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store went away mid-night")

    monkeypatch.setattr(flows.nightly, "_learn", store_gone)
    lab = make_lab(tmp_path)
    plan = write_plan(lab, "moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
    try:
        state = nightly(
            plan=str(plan),
            config=str(lab.dir / "hvmove.yaml"),
            window="now+60",
            poll_seconds=0.3,
            return_state=True,
        )
    finally:
        lab.server.stop()
    assert state.is_failed() and "store went away" in (state.message or ""), state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    report = next(a for a in artifacts if a.key == "nightly-report")
    assert "web01" in report.data and "store went away mid-night" in report.data, report.data
