"""Resume at every step, pipeline-level against the lab (no Prefect): an orchestrator that dies at
any point, or a host that reboots mid-copy, and the rerun of the same record finishes the move
without a second Start-StorageMove and without blocking itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import GiB, Lab, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)
STEPS = ("prechecks", "copy", "cutover", "verify", "cleanup")


class Crash(Exception):
    """The orchestrator's process dies here; the host goes on."""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def open_record(lab: Lab, store: Store, req: MoveRequest) -> str:
    vm = lab.vm(req.vm)
    return store.open_move(
        host=req.host, vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id


def starts(lab: Lab) -> int:
    return sum(1 for c in lab.server.scripts.calls if c[1] == "Start-StorageMove")


def crash_at_percent(percent: int):
    def on_progress(p: pipeline.Progress) -> None:
        if p.percent >= percent:
            raise Crash(f"killed at {p.percent}%")

    return on_progress


def run_steps(client, store: Store, move_id: str, req: MoveRequest, upto: str = "cleanup"):
    """The steps in the flow's order, each once, as a rerun of the flow does."""
    report = pipeline.run_prechecks(client, store, move_id, req, OPTS)
    for step in STEPS[1 : STEPS.index(upto) + 1]:
        if step == "copy":
            pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        elif step == "cutover":
            pipeline.run_cutover(client, store, move_id, req)
        elif step == "verify":
            pipeline.run_verify(client, store, move_id)
        else:
            pipeline.run_cleanup(client, store, move_id)
    return report


def assert_finished(lab: Lab, store: Store, move_id: str, source: str) -> None:
    record = store.get(move_id)
    assert record.verified and record.source_removed, record.verification
    assert not lab.server.estate.local("hv01", source).exists()
    assert lab.server.engine.lost_writes(record.vm_id)["lost"] == 0


@pytest.mark.parametrize("crash_after", STEPS)
def test_rerun_after_a_crash_at_each_step_finishes_with_one_start(
    lab: Lab, store: Store, crash_after: str
) -> None:
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    source = lab.vm("web01").drives[0].path
    move_id = open_record(lab, store, req)
    with lab.client() as client:
        run_steps(client, store, move_id, req, upto=crash_after)
    # a new process: a new client, the same record
    with lab.client() as client:
        run_steps(client, store, move_id, req)
    assert_finished(lab, store, move_id, source)
    assert starts(lab) == 1


@pytest.mark.parametrize("field", ["precheck", "job_id", "copy_seconds", "verification", "cleanup"])
def test_rerun_after_a_crash_inside_a_step_before_it_recorded(
    lab: Lab, store: Store, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """The step did its work on the host, then the process died before the record said so:
    the rerun looks at the host and finishes without a second move."""
    real = Store.update
    crashed: list[str] = []

    def update(self: Store, move_id: str, **fields) -> None:
        # job_id: the host named the job (the mark written before the start is no such record)
        if field in fields and fields[field] != prechecks.JOB_STARTING and not crashed:
            crashed.append(field)
            raise Crash(f"killed before recording {field}")
        real(self, move_id, **fields)

    monkeypatch.setattr(Store, "update", update)
    if field == "job_id":
        lab.server.control("settings", {"rate_scale": 8.0})  # still copying at the rerun
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    source = lab.vm("web01").drives[0].path
    move_id = open_record(lab, store, req)
    with lab.client() as client, pytest.raises(Crash):
        run_steps(client, store, move_id, req)
    assert crashed == [field]
    with lab.client() as client:
        if field == "job_id":
            assert client.move_status(lab.vm("web01").id).job.running
        run_steps(client, store, move_id, req)
    assert_finished(lab, store, move_id, source)
    assert starts(lab) == 1


def test_rerun_after_a_crash_mid_copy_attaches_and_charges_only_what_remains(
    lab: Lab, store: Store
) -> None:
    """sql01 (~69 GiB) into an 80 GiB E: (10% headroom: 8 GiB). Once a few GiB are copied the free
    space already lacks them: charging the whole move again would block the rerun by its own
    copy; charging what remains leaves the same 11 GiB as at the start."""
    lab.server.control("set_volume", {"root": "E:\\", "host": "hv01", "capacity": 80 * GiB})
    # slow enough that the job is still copying when the rerun looks (seconds to spare)
    lab.server.control("settings", {"rate_scale": 4.0})
    req = MoveRequest(host="hv01", vm="sql01", destination="E:\\VMs\\sql01")
    source = lab.vm("sql01").drives[0].path
    move_id = open_record(lab, store, req)
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        with pytest.raises(Crash):
            pipeline.run_copy(
                client, store, move_id, req, poll_s=0.02, on_progress=crash_at_percent(20)
            )
    assert store.get(move_id).job_id
    with lab.client() as client:
        assert client.move_status(lab.vm("sql01").id).job.running
        report = pipeline.run_prechecks(client, store, move_id, req, OPTS)
        space = next(c for c in report.checks if c.name == "space")
        move = next(c for c in report.checks if c.name == "move running")
        assert move.status == "pass" and space.status == "pass", report.checks
        assert space.numbers["already_copied"] > 0
        assert space.numbers["bytes_needed"] < report.bytes_to_copy
        lab.server.control("settings", {"rate_scale": 200.0})
        copied = pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        assert copied["started_here"] is False  # attached to the job the dead run started
        pipeline.run_cutover(client, store, move_id, req)
        pipeline.run_verify(client, store, move_id)
        pipeline.run_cleanup(client, store, move_id)
    assert_finished(lab, store, move_id, source)
    assert starts(lab) == 1


def test_own_running_job_is_never_blocked_by_prechecks(lab: Lab, store: Store) -> None:
    """Whatever prechecks find while this move's own job copies, blocking would leave Hyper-V
    copying with nobody following: the failure becomes a warning and the copy step attaches."""
    lab.server.control("settings", {"rate_scale": 1.0})
    req = MoveRequest(host="hv01", vm="sql01", destination="E:\\VMs\\sql01")
    move_id = open_record(lab, store, req)
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        with pytest.raises(Crash):
            pipeline.run_copy(
                client, store, move_id, req, poll_s=0.02, on_progress=crash_at_percent(1)
            )
        # meanwhile an admin set the host's MaximumStorageMigrations to 0: a blocker for a new
        # move, not a reason to abandon the one already copying
        for host in lab.server.estate.data.hosts:
            host.maximum_storage_migrations = 0
        report = pipeline.run_prechecks(client, store, move_id, req, OPTS)
        limit = next(c for c in report.checks if c.name == "host limit")
        assert report.ok and limit.status == "warn", report.checks
        assert "already running" in limit.remedy
        client.stop_move(lab.vm("sql01").id)


def test_rerun_after_a_host_reboot_mid_copy_removes_own_leftovers(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=4.0)
    try:
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")
        req = MoveRequest(host="hv01", vm="sql01", destination="E:\\r\\sql01")
        source = lab.vm("sql01").drives[0].path
        move_id = open_record(lab, store, req)
        lab.server.engine.inject({"kind": "reboot_at", "vm": "sql01", "percent": 30})
        with lab.client() as client, pytest.raises(Exception):  # noqa: B017 - any failure
            run_steps(client, store, move_id, req, upto="copy")
        deadline = time.monotonic() + 30
        while lab.server.reboots == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lab.server.reboots == 1
        leftovers = list((tmp_path / "hosts/hv01/E/r").rglob("*.vhdx"))
        assert leftovers  # a crash does not clean up: the partial destination is ours
        lab.server.control("settings", {"rate_scale": 200.0})
        with lab.client() as client:
            report = run_steps(client, store, move_id, req)
        assert "destination files" not in {c.name for c in report.checks}
        assert_finished(lab, store, move_id, source)
        assert starts(lab) == 1  # counted since the reboot: the one restart
    finally:
        lab.server.stop()


def test_a_switched_but_unverified_move_is_finished_not_counted_done(lab: Lab) -> None:
    """A run that died after the switch: the night must run its verify and cleanup (finish
    only), not count it as already done and leave the source undeleted and unverified."""
    from hvmove.batch import load_and_resolve, move_id, night_inputs, precheck_all

    store = Store(lab.config.store_url())
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    record_id = open_record(lab, store, req)
    with lab.client() as client:
        run_steps(client, store, record_id, req, upto="cutover")
    store.step_ended(record_id, "cutover", "completed")
    plan = lab.dir / "night.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n")
    moves, inventories = load_and_resolve(lab.config, plan, store)
    reports = precheck_all(lab.config, moves, reserve=False, store=store)
    assert reports[0].already_done  # the host shows the VM at its destination
    night = night_inputs(lab.config, moves, reports, inventories, store)
    assert night.finish_only == [move_id(moves[0])] and night.already_done == []
    # a move finished for good is done
    with lab.client() as client:
        pipeline.run_verify(client, store, record_id)
        pipeline.run_cleanup(client, store, record_id)
    store.finish(record_id, "completed")
    night = night_inputs(lab.config, moves, reports, inventories, store)
    assert night.already_done == [move_id(moves[0])] and night.finish_only == []
