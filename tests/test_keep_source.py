"""Finding 1 of issue 10: what happens to the source, per move path.

Move-VMStorage deletes the source copy of every moved disk at the switch (-RetainVhdCopiesOnSource
keeps only parents); the WMI storage migration with AvoidRemovingVHDs keeps them all, and also keeps
a failed move's partial destination, which hvmove removes itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.moves import follow
from hvmove.store import Store
from tests.conftest import Lab, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16)


def _exists(lab: Lab, path: str) -> bool:
    return lab.server.estate.local("hv01", path).exists()


def _done(client, vm_id: str):
    job = follow(client, vm_id, poll_s=0.05, timeout_s=60)
    assert job is not None and job.job_state == "Completed", job
    return job


def test_move_vmstorage_deletes_moved_disks_and_keeps_only_parents(client, lab: Lab) -> None:
    vm = lab.vm("app01")  # a chain of three: current AVHDX, older AVHDX, base VHDX
    chain = [c.path for c in client.inventory(vm.id).vms[0].drives[0].chain]
    assert len(chain) == 3
    start = client.start_move(vm.id, "all", destination="F:\\VMs\\app01", keep_source=False)
    assert start.method == "move-vmstorage"
    _done(client, vm.id)
    # the writable disk is gone from the source; its read-only parents stay
    assert [_exists(lab, p) for p in chain] == [False, True, True]


def test_wmi_path_keeps_every_source_copy(client, lab: Lab) -> None:
    vm = lab.vm("app01")
    chain = [c.path for c in client.inventory(vm.id).vms[0].drives[0].chain]
    start = client.start_move(vm.id, "all", destination="F:\\VMs\\app01", keep_source=True)
    assert start.method == "wmi"
    _done(client, vm.id)
    assert [_exists(lab, p) for p in chain] == [True, True, True]


def test_host_without_avoid_removing_vhds_fails_the_precheck(client, lab: Lab) -> None:
    lab.server.estate.host("hv01").avoid_removing_vhds = False
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    report = prechecks.run(client, req, OPTS).report
    check = next(c for c in report.checks if c.name == "source copy")
    assert check.status == "fail" and "AvoidRemovingVHDs" in check.detail
    assert "keep_source_until_verified: false" in check.remedy
    assert not report.ok
    # the same host with keep_source_until_verified: false says the source goes at the switch
    loose = prechecks.Options(headroom_percent=10, probe_mib=16, keep_source=False)
    report = prechecks.run(client, req, loose).report
    check = next(c for c in report.checks if c.name == "source copy")
    assert check.status == "pass" and "Move-VMStorage" in check.detail
    assert report.move_path == "move-vmstorage"
    # and the script refuses -KeepSource there too, whoever calls it
    with pytest.raises(Exception, match="AvoidRemovingVHDs"):
        client.start_move(lab.vm("web01").id, "all", destination="E:\\x\\web01", keep_source=True)


def test_prechecks_name_the_wmi_path(client, lab: Lab) -> None:
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    report = prechecks.run(client, req, OPTS).report
    check = next(c for c in report.checks if c.name == "source copy")
    assert check.status == "pass" and report.move_path == "wmi"


def test_failed_wmi_move_leaves_no_partial_destination(tmp_path: Path) -> None:
    """AvoidRemovingVHDs keeps a failed move's destination VHDs: hvmove removes them."""
    lab = make_lab(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with lab.client() as client:
            vm = lab.vm("web01")
            req = MoveRequest(host="hv01", vm="web01", destination="E:\\fail\\web01")
            move_id = store.open_move(
                host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
            ).id
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            lab.server.engine.inject({"kind": "fail_at", "vm": "web01", "percent": 40})
            with pytest.raises(pipeline.StepFailed, match="partial destination was removed"):
                pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
            assert not [p for p in (lab.dir / "hosts/hv01/E").rglob("*") if p.is_file()]
            assert _exists(lab, vm.drives[0].path)
    finally:
        lab.server.stop()
