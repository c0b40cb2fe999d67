"""Following a move is bounded: a dead host fails the copy step as transient within its silence
bound (the job id stays in the store for a rerun to attach), and a job that vanishes with a host
reboot is read from the VM's paths, never reported as 'ended Running'."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hvmove import pipeline
from hvmove.hyperv.errors import TransientError
from hvmove.models import MoveRequest
from hvmove.moves import HostSilent
from hvmove.store import Store
from tests.conftest import make_lab


def _copy_in_thread(lab, store: Store, move_id: str, request: MoveRequest, **kw):
    box: dict = {}

    def run() -> None:
        with lab.client() as client:
            try:
                box["result"] = pipeline.run_copy(client, store, move_id, request, **kw)
            except BaseException as exc:
                box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _prepared(lab, tmp_path: Path) -> tuple[Store, str, MoveRequest]:
    from hvmove import prechecks

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    vm = lab.vm("web01")
    request = MoveRequest(host="hv01", vm="web01", destination="F:\\VMs\\web01")
    record = store.open_move(host="hv01", vm_id=vm.id, vm_name="web01", request={})
    with lab.client() as client:
        pipeline.run_prechecks(client, store, record.id, request, prechecks.Options())
    return store, record.id, request


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_dead_host_fails_the_copy_within_its_silence_bound(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=8)  # web01 to F: takes about 12 s
    try:
        store, move_id, request = _prepared(lab, tmp_path)
        vm = lab.vm("web01")
        t, box = _copy_in_thread(lab, store, move_id, request, poll_s=0.1, silence_s=1)
        _wait(lambda: any(j.percent >= 2 for j in lab.server.engine.jobs_of(vm.id)))
        lab.server.endpoint.kill_host("hv01")
        t.join(60)  # without a bound, follow() asks a dead host for ever
        assert not t.is_alive(), "the copy step did not end while the host was silent"
        error = box.get("error")
        assert isinstance(error, HostSilent) and isinstance(error, TransientError), box
        assert "hv01" in str(error) and "has not answered for" in str(error)
        # the job id stays, so the retry attaches to the job instead of starting a second one
        assert store.get(move_id).job_id == lab.server.engine.jobs_of(vm.id)[0].job_id
    finally:
        lab.server.stop()


def test_job_lost_with_a_host_reboot_is_read_from_the_vm(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=8)
    try:
        store, move_id, request = _prepared(lab, tmp_path)
        vm = lab.vm("web01")
        lab.server.control("engine_fault", {"kind": "reboot_at", "vm": "web01", "percent": 5})
        t, box = _copy_in_thread(lab, store, move_id, request, poll_s=0.1, silence_s=60)
        t.join(90)
        assert not t.is_alive()
        error = box.get("error")
        assert isinstance(error, pipeline.StepFailed), box
        assert "vanished" in str(error) and "still on its source" in str(error), error
        assert "ended Running" not in str(error)
        with lab.client() as client:
            assert not client.vm_paths(vm.id).disk_paths[0].startswith("F:")
    finally:
        lab.server.stop()
