"""Cancel = stop the copy, with the lab: a job past the point of no return (Hyper-V refuses the
stop, 32775) is left to finish and its still-open record says so; a stop hvmove asks for is
written to the record first, so whoever follows the job records `cancelled` with the reason."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hvmove import cancel, pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import Lab, make_lab


def _copying(lab: Lab, vm: str = "web01") -> tuple[Store, str, dict]:
    """web01's copy to F:, followed in a thread as the copy step does; returns when it copies."""
    store = Store(lab.config.store_url())  # the one the guard opens from the config
    request = MoveRequest(host="hv01", vm=vm, destination=f"F:\\VMs\\{vm}")
    record = store.open_move(
        host="hv01", vm_id=lab.vm(vm).id, vm_name=vm, request=request.model_dump(mode="json")
    )
    with lab.client() as client:
        pipeline.run_prechecks(client, store, record.id, request, prechecks.Options())
    box: dict = {}

    def run() -> None:
        with lab.client() as client:
            try:
                box["result"] = pipeline.run_copy(client, store, record.id, request, poll_s=0.1)
            except BaseException as exc:
                box["error"] = exc

    box["thread"] = t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not any(j.percent >= 5 for j in lab.server.engine.jobs_of(lab.vm(vm).id)):
        assert time.monotonic() < deadline and t.is_alive(), box
        time.sleep(0.05)
    return store, record.id, box


def test_a_refused_stop_leaves_the_job_to_finish_and_the_record_says_so(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=4)
    try:
        vm = lab.vm("web01")
        # from 2 % on, this job refuses a stop although its Cancellable flag still reads true
        lab.server.control(
            "engine_fault",
            {"kind": "refuse_stop", "vm": "web01", "percent": 2, "cancellable": True},
        )
        store, move_id, box = _copying(lab)
        with lab.client() as client:
            done = cancel.stop_move(client, store, move_id, "change freeze", wait_s=30)
        assert done.outcome == "left_to_finish", done
        record = store.get(move_id)
        assert record.status in ("pending", "running")  # open: the next run resumes it
        assert record.reason.startswith(cancel.LEFT_TO_FINISH), record.reason
        assert "change freeze" in record.reason and "32775" in record.reason
        assert cancel.stop_asked(record) is None  # the copy step must not call it cancelled
        lab.server.control("settings", {"rate_scale": 40})
        box["thread"].join(60)
        assert "result" in box, box  # the job copied on and switched: the copy step succeeded
        job = lab.server.engine.jobs_of(vm.id)[-1]
        assert job.state == "Completed"
        with lab.client() as client:
            assert client.vm_paths(vm.id).disk_paths[0].startswith("F:\\")
    finally:
        lab.server.stop()


def test_the_overrun_guard_writes_why_before_it_stops(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=2)
    try:
        store, move_id, box = _copying(lab)
        guard = cancel.OverrunGuard(lab.config)
        now = datetime.now(UTC)
        try:
            line = guard.check("hv01", lab.vm("web01").id, "web01", now + timedelta(seconds=1), now)
        finally:
            guard.close()
        assert line and line.startswith("cancelled web01 on hv01: window overrun"), line
        why = cancel.stop_asked(store.get(move_id))
        assert why and why.startswith("window overrun") and "after the window" in why
        box["thread"].join(60)
        assert "Terminated" in str(box.get("error")), box  # the job was stopped
    finally:
        lab.server.stop()


def test_only_a_job_that_ended_terminated_is_recorded_cancelled(tmp_path: Path) -> None:
    """A stop was asked, but the job failed on its own (an I/O error at 10 %): that move
    failed, whatever was asked; the same note with a job that ended Terminated is a cancel."""
    lab = make_lab(tmp_path, rate_scale=4)
    try:
        lab.server.control("engine_fault", {"kind": "fail_at", "vm": "web01", "percent": 10})
        store, move_id, box = _copying(lab)
        store.update(move_id, reason=cancel.STOP_ASKED + "window overrun: test")
        box["thread"].join(60)
        assert "injected I/O error" in str(box.get("error")), box
        with lab.client() as client:
            assert cancel.settle_stopped(client, store, move_id) is None
            assert store.get(move_id).status != "cancelled"
            # the same note, and the job ended Terminated: the move was cancelled, with the why
            vm_id = lab.vm("web01").id
            lab.server.engine.jobs_of(vm_id)[-1].state = "Terminated"
            assert cancel.settle_stopped(client, store, move_id) == "window overrun: test"
        record = store.get(move_id)
        assert (record.status, record.reason) == ("cancelled", "window overrun: test")
    finally:
        lab.server.stop()
