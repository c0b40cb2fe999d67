"""Moves in the lab behave like Hyper-V's: live copy with mirrored writes, switch, retain or
delete the source, clean failure, the host's concurrency limit."""

from __future__ import annotations

import time
from pathlib import PureWindowsPath

import pytest

from hvmove.hyperv import errors as e
from hvmove.moves import follow, start_or_attach
from tests.conftest import GiB, Lab, make_lab


def wait_done(client, vm_id: str):
    job = follow(client, vm_id, poll_s=0.05, timeout_s=60)
    assert job is not None and not job.running, job
    return job


def real(lab: Lab, windows_path: str):
    return lab.server.estate.local("hv01", windows_path)


@pytest.mark.parametrize("retain", [False, True])
def test_live_move_of_running_vm_loses_no_write(client, lab: Lab, retain: bool) -> None:
    vm = lab.vm("sql01")
    before = client.inventory(vm.id).vms[0]
    sources = [f.path for f in before.vhd_files()]
    start = client.start_move(vm.id, "all", destination="E:\\Moved\\sql01", keep_source=retain)
    assert start.status == "started" and start.job is not None
    seen = []
    job = follow(
        client,
        vm.id,
        poll_s=0.05,
        on_progress=lambda j: seen.append(j.percent_complete),
        timeout_s=60,
    )
    assert job is not None and job.job_state == "Completed", job
    assert seen and seen[-1] == 100 and seen == sorted(seen)  # progress only goes up, to 100
    after = client.vm_paths(vm.id)
    assert all(p.startswith("E:\\Moved\\sql01\\Virtual Hard Disks\\") for p in after.disk_paths), (
        after
    )
    assert after.configuration_location == "E:\\Moved\\sql01"
    # the guest kept writing during the copy; every acknowledged write is on the new disk
    check = lab.server.engine.lost_writes(vm.id)
    assert check["writes"] >= 5 and check["lost"] == 0, check
    facts = client.vhd_facts(after.disk_paths).disks
    assert all(d.test_ok for d in facts), facts
    assert [d.vhd.disk_identifier for d in facts] == [f.disk_identifier for f in before.vhd_files()]
    assert [real(lab, p).exists() for p in sources] == [retain] * len(sources)


def test_checkpoint_chain_moves_with_parent_locators(client, lab: Lab) -> None:
    vm = lab.vm("app01")
    client.start_move(vm.id, "all", destination="F:\\VMs\\app01", keep_source=False)
    assert wait_done(client, vm.id).job_state == "Completed"
    chain = client.inventory(vm.id).vms[0].drives[0].chain
    assert len(chain) == 3 and all(c.path.startswith("F:\\VMs\\app01\\") for c in chain)
    assert chain[0].parent_path == chain[1].path
    assert client.vhd_facts([chain[0].path]).disks[0].test_ok  # Test-VHD follows the chain


def test_vhds_only_mode_and_refusals(client, lab: Lab) -> None:
    vm = lab.vm("sql01")
    data = vm.drives[1].path
    dest = str(PureWindowsPath("F:\\data", PureWindowsPath(data).name))
    with pytest.raises(e.ScriptError, match="names must be identical"):
        client.start_move(vm.id, "vhds", vhds=[(data, "F:\\data\\renamed.vhdx")])
    with pytest.raises(e.ScriptError, match="is not a disk of VM"):
        client.start_move(vm.id, "vhds", vhds=[("D:\\typo.vhdx", "F:\\data\\typo.vhdx")])
    client.start_move(vm.id, "vhds", vhds=[(data, dest)])
    assert wait_done(client, vm.id).job_state == "Completed"
    paths = client.vm_paths(vm.id)
    assert paths.disk_paths == [vm.drives[0].path, dest]
    assert paths.configuration_location == "D:\\VMs\\sql01"  # only the disk moved
    again = client.start_move(vm.id, "vhds", vhds=[(data, dest)])  # the same request, rerun
    assert again.status == "already_at_destination"


@pytest.mark.parametrize("keep", [False, True])
def test_failed_move_removes_partial_destination(client, lab: Lab, keep: bool) -> None:
    """Move-VMStorage removes a failed move's destination; the WMI migration with
    AvoidRemovingVHDs keeps its VHDs ("VHDs on the destination in failure")."""
    vm = lab.vm("web01")
    lab.server.engine.inject({"kind": "fail_at", "vm": "web01", "percent": 40})
    client.start_move(vm.id, "all", destination="E:\\fail\\web01", keep_source=keep)
    job = wait_done(client, vm.id)
    assert job.job_state == "Exception" and "injected" in job.error_description
    assert client.vm_paths(vm.id).disk_paths == [vm.drives[0].path]
    leftovers = [p.name for p in (lab.dir / "hosts/hv01/E").rglob("*") if p.is_file()]
    assert leftovers == (["web01.vhdx"] if keep else [])
    assert lab.server.engine.lost_writes(vm.id)["lost"] == 0


def test_destination_fills_up(client, lab: Lab) -> None:
    vm = lab.vm("sql01")
    lab.server.control("set_volume", {"root": "F:\\", "host": "hv01", "capacity": 50 * GiB})
    client.start_move(vm.id, "all", destination="F:\\full\\sql01", keep_source=False)
    job = wait_done(client, vm.id)
    assert job.job_state == "Exception" and job.error_code == 0x80070070
    assert not [p for p in (lab.dir / "hosts/hv01/F").rglob("*") if p.is_file()]


def test_corrupt_destination_block_is_caught_by_test_vhd(client, lab: Lab) -> None:
    vm = lab.vm("web01")
    lab.server.engine.inject({"kind": "corrupt_block", "vm": vm.id})
    client.start_move(vm.id, "all", destination="E:\\c\\web01", keep_source=True)
    assert wait_done(client, vm.id).job_state == "Completed"  # Hyper-V would not notice either
    path = client.vm_paths(vm.id).disk_paths[0]
    assert client.vhd_facts([path]).disks[0].test_ok is False


def test_cancel_leaves_vm_on_source(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=1.0)  # slow volumes: the move is still running
    try:
        with lab.client() as client:
            vm = lab.vm("sql01")
            client.start_move(vm.id, "all", destination="E:\\x\\sql01", keep_source=False)
            time.sleep(0.3)
            stop = client.stop_move(vm.id)
            assert stop.requested and stop.return_value == 4096
            job = wait_done(client, vm.id)
            assert job.job_state == "Terminated"
            assert client.vm_paths(vm.id).disk_paths[0].startswith("D:\\")
            assert not [p for p in (lab.dir / "hosts/hv01/E").rglob("*") if p.is_file()]
    finally:
        lab.server.stop()


def test_host_migration_limit_is_honoured(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=1.0, max_moves=2)
    try:
        with lab.client() as client:
            ids = [lab.vm(n).id for n in ("web01", "sql01", "app01")]
            client.start_move(ids[0], "all", destination="E:\\a\\web01")
            client.start_move(ids[1], "all", destination="E:\\a\\sql01")
            with pytest.raises(e.HostBusy, match="2 of 2 \\(MaximumStorageMigrations\\)"):
                client.start_move(ids[2], "all", destination="E:\\a\\app01")
            assert client.host_facts().running_storage_moves == 2
            for vm_id in ids[:2]:
                client.stop_move(vm_id)
    finally:
        lab.server.stop()


def test_second_start_attaches_instead_of_moving_twice(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=1.0)
    try:
        with lab.client() as client:
            vm = lab.vm("web01")
            first = start_or_attach(client, vm.id, "all", destination="E:\\b\\web01")
            second = start_or_attach(client, vm.id, "all", destination="E:\\b\\web01")
            assert (first.status, second.status) == ("started", "already_running")
            assert second.job.job_id == first.job.job_id
            assert len(lab.server.engine.jobs_of(vm.id)) == 1
            client.stop_move(vm.id)
    finally:
        lab.server.stop()


def test_host_reboot_mid_move_leaves_vm_on_source(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=2.0)
    try:
        vm = lab.vm("sql01")
        lab.server.engine.inject({"kind": "reboot_at", "vm": "sql01", "percent": 30})
        with lab.client() as client:
            client.start_move(vm.id, "all", destination="E:\\r\\sql01")
            deadline = time.monotonic() + 30
            while lab.server.reboots == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert lab.server.reboots == 1
            time.sleep(0.2)
            # after the reboot: no job survives, the VM still runs from its source
            assert client.move_status(vm.id).job is None
            paths = client.vm_paths(vm.id)
            assert paths.state == "Running" and paths.disk_paths[0].startswith("D:\\")
            # a crash does not clean up: the partial destination is still there to be found
            assert [p for p in (lab.dir / "hosts/hv01/E").rglob("*.vhdx")]
            assert lab.server.engine.lost_writes(vm.id)["lost"] == 0
    finally:
        lab.server.stop()


def test_follow_rides_out_a_lost_status_reply(tmp_path) -> None:
    """A dropped reply while polling is a blip, not 'no job': follow keeps asking."""
    lab = make_lab(tmp_path, rate_scale=8)
    try:
        with lab.client() as client:
            vm = lab.vm("web01")
            client.start_move(vm.id, "all", destination="E:\\VMs\\web01")
            lab.server.endpoint.faults.add(action="Receive", kind="drop")
            job = follow(client, vm.id, poll_s=0.05, timeout_s=60)
            assert job is not None and job.job_state == "Completed", job
    finally:
        lab.server.stop()
