"""Verification, check by check: each lab fault changes one thing after the switch, and each
test fails when the check that should catch it is removed. Also the Critical VM states and the
heartbeat compared before and after (issue 10 #6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import Lab, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)


@pytest.fixture
def fast(tmp_path: Path):
    lab = make_lab(tmp_path, rate_scale=200.0)
    yield lab
    lab.server.stop()


def move_and_verify(lab: Lab, vm: str, destination: str, fault: str | None = None) -> dict:
    store = Store(f"sqlite:///{lab.dir / 'verify.db'}")
    record = lab.vm(vm)
    req = MoveRequest(host="hv01", vm=vm, destination=destination)
    move_id = store.open_move(
        host="hv01", vm_id=record.id, vm_name=vm, request=req.model_dump(mode="json")
    ).id
    if fault:
        lab.server.engine.inject({"kind": fault, "vm": vm})
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        pipeline.run_cutover(client, store, move_id, req)
        return pipeline.run_verify(client, store, move_id)


def test_an_untouched_move_verifies(fast: Lab) -> None:
    evidence = move_and_verify(fast, "app01", "F:\\VMs\\app01")
    assert evidence["verified"] and not evidence["problems"]
    assert all(all(row["same"].values()) for row in evidence["disks"])


@pytest.mark.parametrize(
    ("fault", "vm", "problem"),
    [
        ("change_identifier", "web01", "disk_identifier changed"),
        ("change_size", "web01", "size changed"),
        ("change_parent", "app01", "parent changed"),
        ("detach_disk", "sql01", "not attached now"),
        ("lose_heartbeat", "web01", "heartbeat is 'LostCommunication'"),
    ],
)
def test_each_verification_check_catches_its_fault(
    fast: Lab, fault: str, vm: str, problem: str
) -> None:
    with pytest.raises(pipeline.StepFailed, match="verification failed") as failed:
        move_and_verify(fast, vm, f"F:\\VMs\\{vm}", fault)
    assert problem in str(failed.value)
    # the WMI path kept every source copy, and the message says so
    assert "every source copy is kept" in str(failed.value)


def test_a_guest_without_heartbeat_is_not_a_failed_move(fast: Lab) -> None:
    """NoContact before and after (no integration services) is no fault of the move."""
    fast.server.estate.vm("hv01", fast.vm("web01").id).heartbeat = "NoContact"
    evidence = move_and_verify(fast, "web01", "F:\\VMs\\web01")
    assert evidence["verified"] and evidence["heartbeat"] == "NoContact"


def test_critical_vm_is_moved_with_a_warning(fast: Lab) -> None:
    """RunningCritical (storage low) is Running, flagged: exactly the VM worth moving."""
    fast.server.estate.vm("hv01", fast.vm("web01").id).critical = True
    with fast.client() as client:
        vm = client.inventory(fast.vm("web01").id).vms[0]
        assert (vm.state, vm.critical) == ("Running", True)
        paths = client.vm_paths(vm.id)
        assert (paths.state, paths.critical) == ("Running", True)
        req = MoveRequest(host="hv01", vm="web01", destination="F:\\VMs\\web01")
        report = prechecks.run(client, req, OPTS).report
    assert report.ok
    health = next(c for c in report.checks if c.name == "vm health")
    assert health.status == "warn" and "critical" in health.detail
    assert move_and_verify(fast, "web01", "F:\\VMs\\web01")["verified"]


def _move_to_cutover(lab: Lab, vm: str, destination: str) -> dict:
    store = Store(f"sqlite:///{lab.dir / 'cutover.db'}")
    record = lab.vm(vm)
    req = MoveRequest(host="hv01", vm=vm, destination=destination)
    move_id = store.open_move(
        host="hv01", vm_id=record.id, vm_name=vm, request=req.model_dump(mode="json")
    ).id
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        return pipeline.run_cutover(client, store, move_id, req)


def test_a_clustered_vms_configuration_is_refreshed_on_its_node(fast: Lab) -> None:
    """Issue 10 #9: after its configuration moved, the cluster resource follows."""
    fast.server.estate.host("hv01").cluster_name = "CL01"
    evidence = _move_to_cutover(fast, "web01", "F:\\VMs\\web01")
    assert evidence["cluster"]["updated"] is True
    assert fast.server.scripts.cluster_refreshed == [fast.vm("web01").id]


def test_a_failed_cluster_refresh_fails_the_cutover(fast: Lab) -> None:
    fast.server.estate.host("hv01").cluster_name = "CL01"
    fast.server.scripts.cluster_refresh_error = "the resource is offline"
    with pytest.raises(pipeline.StepFailed, match=r"not refreshed: .*offline"):
        _move_to_cutover(fast, "web01", "F:\\VMs\\web01")


def test_a_vm_that_is_not_clustered_asks_no_cluster(fast: Lab) -> None:
    evidence = _move_to_cutover(fast, "web01", "F:\\VMs\\web01")
    assert evidence["cluster"] is None
    assert not [c for c in fast.server.scripts.calls if c[1] == "Update-ClusterVmConfig"]
