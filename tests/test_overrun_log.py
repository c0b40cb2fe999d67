"""The night's overrun cancel, when its stop fails (issue 12): it says so at ERROR level in the
night's log. The lab's Stop-StorageMove writes a non-terminating error and still stops the job,
as a cmdlet may: the move is then recorded cancelled for the overrun, because its job ended
Terminated after hvmove asked for the stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hvmove.store import Store
from tests.conftest import make_lab

pytestmark = pytest.mark.slow


def _error_lines(flow_run_id, timeout: float = 20) -> list[str]:
    """The run's ERROR lines; Prefect ships logs in batches, so they may arrive late."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]),
                    level=LogFilterLevel(ge_=40),
                )
            )
            if logs or time.monotonic() > deadline:
                return [log.message for log in logs]
            time.sleep(0.5)


def test_an_overrun_cancel_that_fails_is_logged_as_an_error(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.nightly import nightly

    lab = make_lab(tmp_path, rate_scale=8)
    try:
        plan = lab.dir / "plan.yaml"
        plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\w'}\n")
        web = lab.vm("web01")
        scripts = lab.server.scripts
        scripts.write_errors["Stop-StorageMove"] = "Stop-StorageMove : the lab refuses (test)"

        def slow_down() -> None:
            while not lab.server.engine.jobs_of(web.id):
                time.sleep(0.1)
            lab.server.control("settings", {"rate_scale": 0.5})  # now it would overrun

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
        errors = _error_lines(state.state_details.flow_run_id)
        said = [m for m in errors if m.startswith("could not check or stop web01 on hv01")]
        assert said, errors
        assert "the window's end" in said[0] and "the lab refuses (test)" in said[0], said
        # the error was non-terminating: the stop acted, and the job ended Terminated as asked
        assert lab.server.engine.jobs_of(web.id)[-1].state == "Terminated"
        record = next(r for r in Store(lab.config.store_url()).moves() if r.vm_name == "web01")
        assert record.status == "cancelled", (record.status, record.reason)
        assert record.reason.startswith("window overrun"), record.reason
    finally:
        lab.server.stop()
