"""hvmove's own guards, proved with the lab's script refusals switched off.

The project scripts refuse a second move of a moving VM and the deletion of a referenced file; the
lab models those refusals. These tests turn them off (``script_refusals``) and count the scripts
hvmove calls, so that they fail when hvmove itself stops looking before it acts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.moves import follow, start_or_attach
from hvmove.store import Store
from tests.conftest import Lab, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)


def calls(lab: Lab, script: str) -> int:
    return sum(1 for c in lab.server.scripts.calls if c[1] == script)


def open_record(lab: Lab, store: Store, req: MoveRequest) -> str:
    vm = lab.vm(req.vm)
    return store.open_move(
        host=req.host, vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id


@pytest.fixture
def loose(tmp_path: Path):
    """A lab without the scripts' refusals, slow enough that a move is still running."""
    lab = make_lab(tmp_path, rate_scale=2.0, refusals=False)
    yield lab
    lab.server.stop()


def test_the_lab_really_starts_a_second_move_when_refusals_are_off(loose: Lab) -> None:
    """The premise of the tests below: without hvmove's look-first, a second move would run."""
    with loose.client() as client:
        vm = loose.vm("web01")
        client.start_move(vm.id, "all", destination="E:\\b\\web01")
        second = client.start_move(vm.id, "all", destination="E:\\c\\web01")
        assert second.status == "started"
        assert len(loose.server.engine.jobs_of(vm.id)) == 2
        for job in loose.server.engine.jobs_of(vm.id):
            job.cancel.set()


def test_start_or_attach_looks_before_it_starts(loose: Lab) -> None:
    with loose.client() as client:
        vm = loose.vm("web01")
        first = start_or_attach(client, vm.id, "all", destination="E:\\b\\web01")
        second = start_or_attach(client, vm.id, "all", destination="E:\\b\\web01")
        assert (first.status, second.status) == ("started", "already_running")
        assert calls(loose, "Start-StorageMove") == 1
        assert len(loose.server.engine.jobs_of(vm.id)) == 1
        client.stop_move(vm.id)


def test_copy_attaches_to_the_running_job_and_touches_nothing(loose: Lab, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    move_id = open_record(loose, store, req)
    with loose.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        # an earlier run started the move and died; the record has its job
        start = client.start_move(loose.vm("web01").id, "all", destination=req.destination)
        store.update(move_id, job_id=start.job.job_id)
        loose.server.control("settings", {"rate_scale": 40.0})
        result = pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        assert not result["started_here"]
        assert calls(loose, "Start-StorageMove") == 1  # only the earlier run's
        # and never "cleaned up" the running move's destination as leftovers
        assert calls(loose, "Remove-StorageFiles") == 0
        assert loose.server.engine.lost_writes(loose.vm("web01").id)["lost"] == 0


def test_started_without_a_job_is_looked_at_again(tmp_path: Path) -> None:
    """Start-StorageMove may say "started" before Hyper-V shows the Msvm_MigrationJob."""
    lab = make_lab(tmp_path, refusals=False)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        lab.server.scripts.start_without_job = True
        req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
        move_id = open_record(lab, store, req)
        with lab.client() as client:
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            result = pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            assert result["started_here"] and result["job_state"] == "Completed"
            assert store.get(move_id).job_id  # the job that appeared is recorded
            assert calls(lab, "Start-StorageMove") == 1
            pipeline.run_cutover(client, store, move_id, req)
    finally:
        lab.server.stop()


def test_cleanup_deletes_only_the_moves_own_sources(tmp_path: Path) -> None:
    """Without the script's "referenced" refusal, cleanup still deletes only the verified move's
    old source copies, never a disk the VM (or another VM) uses now."""
    lab = make_lab(tmp_path, refusals=False)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
        move_id = open_record(lab, store, req)
        with lab.client() as client:
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            pipeline.run_cutover(client, store, move_id, req)
            # before verification nothing is deleted, whatever the host would allow
            with pytest.raises(pipeline.StepFailed, match="not verified"):
                pipeline.run_cleanup(client, store, move_id)
            assert calls(lab, "Remove-StorageFiles") == 0
            pipeline.run_verify(client, store, move_id)
            pipeline.run_cleanup(client, store, move_id)
            now = client.vm_paths(lab.vm("web01").id).disk_paths
            assert all(lab.server.estate.local("hv01", p).exists() for p in now)
            others = [d.path for n in ("sql01", "app01") for d in lab.vm(n).drives if d.path]
            assert all(lab.server.estate.local("hv01", p).exists() for p in others)
            assert follow(client, lab.vm("web01").id, poll_s=0.02) is not None
            assert lab.server.engine.lost_writes(lab.vm("web01").id)["lost"] == 0
    finally:
        lab.server.stop()
