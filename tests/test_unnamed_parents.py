"""A differencing disk moved in mode `vhds` whose parent the request does not name (issue 10).

Microsoft's documentation does not say where such a parent goes. Move-VMStorage's -Vhds takes
"locations for each individual virtual hard disk to be moved"; -RemoveSourceUnmanagedVhds
"deletes the parent virtual hard disk on the source after this cmdlet moves a differencing virtual
hard disk" (learn.microsoft.com/powershell/module/hyper-v/move-vmstorage);
Msvm_VirtualSystemMigrationSettingData.UnmanagedVhds lists Msvm_MoveUnmanagedVhd source ->
destination pairs (msvm-virtualsystemmigrationsettingdata). Neither says whether an unnamed parent
stays or lands beside its child. The lab answers either way (premise
`unnamed_parents_move_with_child`, default: it stays, the literal reading of -Vhds); hvmove's
prechecks assume it may land beside the child (its name, an existing file and its bytes there
count) and its cleanup never deletes it. Both answers must end in a verified move that keeps the
parent. On a Windows host the canary is the place to observe which answer is true.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import make_lab
from tests.test_prechecks_parents import CHILD, GOLDEN, _golden_vm
from tests.test_resume import Crash, crash_at_percent, starts

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)
LANDING = "E:\\y\\base.vhdx"


def _request() -> MoveRequest:
    return MoveRequest.model_validate(
        {
            "host": "hv01",
            "vm": "gold01",
            "mode": "vhds",
            "vhds": [{"source": CHILD, "destination": "E:\\y\\gold01.vhdx"}],
        }
    )


@pytest.mark.parametrize("carried", [False, True], ids=["parent-stays", "parent-carried"])
def test_a_child_moved_without_its_parent_ends_verified_and_keeps_the_parent(
    tmp_path: Path, carried: bool
) -> None:
    lab = make_lab(tmp_path, populate=_golden_vm)
    lab.server.estate.settings.premises.unnamed_parents_move_with_child = carried
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    req = _request()
    vm = lab.vm("gold01")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    try:
        with lab.client() as client:
            report = pipeline.run_prechecks(client, store, move_id, req, OPTS)
            parents = next(c for c in report.checks if c.name == "unnamed parents")
            assert GOLDEN in parents.detail and LANDING in parents.detail
            pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            pipeline.run_cutover(client, store, move_id, req)
            pipeline.run_verify(client, store, move_id)
            pipeline.run_cleanup(client, store, move_id)
            facts = {
                d.path: d for d in client.vhd_facts([GOLDEN, LANDING, "E:\\y\\gold01.vhdx"]).disks
            }
        assert facts[GOLDEN].exists  # the golden image is never deleted
        assert facts[LANDING].exists is carried
        assert facts["E:\\y\\gold01.vhdx"].vhd.parent_path == (LANDING if carried else GOLDEN)
    finally:
        lab.server.stop()


def _sizes(client) -> tuple[int, int]:
    """File sizes of the child and of its parent, as Get-VHD reports them."""
    disks = {d.path: d.vhd for d in client.vhd_facts([CHILD, GOLDEN]).disks}
    return disks[CHILD].file_size, disks[GOLDEN].file_size


def _open(lab, store: Store, req: MoveRequest) -> str:
    vm = lab.vm(req.vm)
    return store.open_move(
        host=req.host, vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id


def test_a_move_whose_unnamed_parent_does_not_fit_is_blocked(tmp_path: Path) -> None:
    """An E: the child fits (with its headroom) but the child and its parent do not."""
    lab = make_lab(tmp_path, populate=_golden_vm)
    try:
        with lab.client() as client:
            child, parent = _sizes(client)
            capacity = child + parent
            lab.server.control("set_volume", {"root": "E:\\", "host": "hv01", "capacity": capacity})
            report = prechecks.run(client, _request(), OPTS).report
        space = next(c for c in report.checks if c.name == "space")
        assert space.status == "fail", space
        assert space.numbers["bytes_needed"] == child + parent
    finally:
        lab.server.stop()


def test_rerun_after_a_crash_mid_copy_of_a_carried_parent(tmp_path: Path) -> None:
    """Parent carried (the lab's other answer): the run dies while Hyper-V copies the parent. The
    rerun takes the partial parent as its own (not "already exists"), charges only what remains
    on an E: with just room for the whole move and its 10% headroom, and attaches: one
    Start-StorageMove."""
    lab = make_lab(tmp_path, populate=_golden_vm, rate_scale=1.0)
    lab.server.estate.settings.premises.unnamed_parents_move_with_child = True
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    req = _request()
    try:
        move_id = _open(lab, store, req)
        with lab.client() as client:
            child, parent = _sizes(client)
            capacity = int((child + parent) / 0.88)  # 2 % of the move to spare
            lab.server.control("set_volume", {"root": "E:\\", "host": "hv01", "capacity": capacity})
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            with pytest.raises(Crash):
                pipeline.run_copy(
                    client, store, move_id, req, poll_s=0.02, on_progress=crash_at_percent(20)
                )
        assert store.get(move_id).job_id
        assert lab.server.estate.local("hv01", LANDING).exists()  # the partial parent
        with lab.client() as client:
            assert client.move_status(lab.vm("gold01").id).job.running
            report = pipeline.run_prechecks(client, store, move_id, req, OPTS)
            checks = {c.name: c for c in report.checks}
            assert "destination files" not in checks, checks["destination files"]
            space = checks["space"]
            assert space.status == "pass", space
            assert 0 < space.numbers["already_copied"] < child + parent
            assert space.numbers["bytes_needed"] < child + parent
            lab.server.control("settings", {"rate_scale": 200.0})
            copied = pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            assert copied.get("started_here") is False or copied.get("skipped"), copied
            pipeline.run_cutover(client, store, move_id, req)
            pipeline.run_verify(client, store, move_id)
            pipeline.run_cleanup(client, store, move_id)
        assert starts(lab) == 1
        assert lab.server.estate.local("hv01", GOLDEN).exists()
    finally:
        lab.server.stop()


def test_a_file_that_blocked_the_first_attempt_is_never_taken_as_its_own(tmp_path: Path) -> None:
    """Another VM's copy of the golden image at the landing blocks the move; the record keeps the
    planned destinations, but no attempt started, so the rerun is blocked the same way."""
    lab = make_lab(tmp_path, populate=_golden_vm)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    req = _request()
    try:
        other = lab.server.estate.local("hv01", LANDING)
        other.parent.mkdir(parents=True)
        other.write_bytes(b"another VM's copy of the golden image")
        move_id = _open(lab, store, req)
        with lab.client() as client:
            for _attempt in range(2):
                with pytest.raises(pipeline.Blocked, match="already exist"):
                    pipeline.run_prechecks(client, store, move_id, req, OPTS)
        assert starts(lab) == 0 and other.exists()
    finally:
        lab.server.stop()


def test_a_failed_attempts_partial_parent_is_removed_before_the_rerun(tmp_path: Path) -> None:
    """Parent carried, the copy fails inside the parent. AvoidRemovingVHDs keeps "VHDs on the
    destination in failure" (msvm-virtualsystemmigrationsettingdata): hvmove removes its own
    partial files, the carried parent's included, so the rerun's Start-StorageMove does not
    meet a file already there."""
    lab = make_lab(tmp_path, populate=_golden_vm)
    lab.server.estate.settings.premises.unnamed_parents_move_with_child = True
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    req = _request()
    try:
        lab.server.engine.inject({"kind": "fail_at", "vm": "gold01", "percent": 30})
        move_id = _open(lab, store, req)
        with lab.client() as client:
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            with pytest.raises(pipeline.StepFailed, match="Exception"):
                pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            assert not lab.server.estate.local("hv01", LANDING).exists()
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
            pipeline.run_cutover(client, store, move_id, req)
            pipeline.run_verify(client, store, move_id)
        assert starts(lab) == 2
    finally:
        lab.server.stop()


def test_a_parent_no_drive_attaches_cannot_be_named(tmp_path: Path) -> None:
    """As Start-StorageMove.ps1 does: a VhdSourcePath that no drive or checkpoint of the VM
    attaches "Hyper-V would treat as an unmanaged VHD" (hyperv.md 1.3), so it is refused, the
    golden parent included."""
    from hvmove.hyperv import errors as e

    lab = make_lab(tmp_path, populate=_golden_vm)
    try:
        with lab.client() as client, pytest.raises(e.ScriptError, match="unmanaged VHD"):
            client.start_move(lab.vm("gold01").id, "vhds", vhds=[(GOLDEN, "E:\\y\\base.vhdx")])
        assert not lab.server.engine.jobs
    finally:
        lab.server.stop()
