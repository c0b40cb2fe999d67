"""The five steps as plain functions against the lab (no Prefect): what each checks and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import GiB, Lab, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16)


def open_record(lab: Lab, store: Store, req: MoveRequest) -> str:
    vm = lab.vm(req.vm)
    return store.open_move(
        host=req.host, vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def names(report, status: str) -> set[str]:
    return {c.name for c in report.checks if c.status == status}


def test_prechecks_pass_with_numbers_and_eta(client, lab: Lab) -> None:
    req = MoveRequest(host="hv01", vm="sql01", destination="F:\\VMs\\sql01")
    report = prechecks.run(client, req, OPTS).report
    assert report.ok and not names(report, "fail")
    assert report.bytes_to_copy > 60 * GiB  # fixed 60 GiB + a dynamic disk + configuration
    assert report.odx is False and report.mbps and report.eta_seconds
    space = next(c for c in report.checks if c.name == "space")
    assert space.numbers["free_after"] == space.numbers["free"] - report.bytes_to_copy
    assert report.needed_by_volume == {"hv01|f:\\": report.bytes_to_copy}


def test_prechecks_block_iso_and_warn_checkpoints(client) -> None:
    iso = prechecks.run(
        client, MoveRequest(host="hv01", vm="iso01", destination="E:\\x"), OPTS
    ).report
    assert not iso.ok and "attached ISO" in names(iso, "fail")
    assert "Set-VMDvdDrive" in iso.failures()[0].remedy
    cp = prechecks.run(
        client, MoveRequest(host="hv01", vm="app01", destination="E:\\x"), OPTS
    ).report
    assert cp.ok and "checkpoints" in names(cp, "warn")
    strict = prechecks.Options(headroom_percent=10, probe_mib=16, allow_checkpoints=False)
    refused = prechecks.run(
        client, MoveRequest(host="hv01", vm="app01", destination="E:\\x"), strict
    ).report
    assert "checkpoints" in names(refused, "fail")


def test_prechecks_block_passthrough_and_shared_disks(tmp_path: Path) -> None:
    from hvmove.lab.build import add_vm

    def populate(estate) -> None:
        add_vm(estate, "hv01", "pt01", pass_through=True)
        add_vm(estate, "hv01", "guestclu01", shared_disk=True)

    lab = make_lab(tmp_path, populate=populate)
    try:
        with lab.client() as c:
            pt = prechecks.run(c, MoveRequest(host="hv01", vm="pt01", destination="E:\\x"), OPTS)
            shared = prechecks.run(
                c, MoveRequest(host="hv01", vm="guestclu01", destination="E:\\x"), OPTS
            )
        assert "pass-through disk" in names(pt.report, "fail")
        assert "shared VHDX" in names(shared.report, "fail")
    finally:
        lab.server.stop()


def test_prechecks_reserve_space_across_the_batch(client, lab: Lab) -> None:
    # F: holds 95 GiB: sql01 (~69 GiB) fits alone, web01 (~21 GiB) only if sql01 is not counted
    lab.server.control("set_volume", {"root": "F:\\", "host": "hv01", "capacity": 95 * GiB})
    first = prechecks.run(client, MoveRequest(host="hv01", vm="sql01", destination="F:\\a"), OPTS)
    assert first.report.ok
    alone = prechecks.run(client, MoveRequest(host="hv01", vm="web01", destination="F:\\b"), OPTS)
    assert alone.report.ok
    batch = prechecks.run(
        client,
        MoveRequest(host="hv01", vm="web01", destination="F:\\b"),
        OPTS,
        reserved=first.report.needed_by_volume,
    )
    assert not batch.report.ok and "reserved by the batch" in batch.report.reason()


def test_prechecks_block_existing_destination_and_foreign_move(client, lab: Lab) -> None:
    target = lab.dir / "hosts/hv01/E/x/Virtual Hard Disks/web01.vhdx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    report = prechecks.run(
        client, MoveRequest(host="hv01", vm="web01", destination="E:\\x"), OPTS
    ).report
    assert "destination files" in names(report, "fail")
    lab.server.control("settings", {"rate_scale": 0.5})
    client.start_move(lab.vm("sql01").id, "all", destination="F:\\other")
    busy = prechecks.run(
        client, MoveRequest(host="hv01", vm="sql01", destination="E:\\y"), OPTS
    ).report
    assert "move running" in names(busy, "fail")
    client.stop_move(lab.vm("sql01").id)


def run_all(client, store: Store, move_id: str, req: MoveRequest) -> None:
    pipeline.run_prechecks(client, store, move_id, req, OPTS)
    pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    pipeline.run_cutover(client, store, move_id, req)
    pipeline.run_verify(client, store, move_id)
    pipeline.run_cleanup(client, store, move_id)


def test_steps_move_verify_and_clean_up(client, lab: Lab, store: Store) -> None:
    req = MoveRequest(host="hv01", vm="app01", destination="E:\\VMs\\app01")  # checkpoint chain
    move_id = open_record(lab, store, req)
    run_all(client, store, move_id, req)
    record = store.get(move_id)
    assert record.verified and record.source_removed
    assert len(record.verification["disks"]) == 3
    assert all(all(d["same"].values()) for d in record.verification["disks"])
    # the source side is empty: files and the folders the move left
    assert not (lab.dir / "hosts/hv01/D/VMs/app01").exists()
    # a second run of every step is harmless: skipped copy, same evidence, nothing to remove
    again = pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    assert again["skipped"]
    pipeline.run_verify(client, store, move_id)
    assert pipeline.run_cleanup(client, store, move_id)["removed"] == []


def test_corrupt_destination_fails_verify_and_keeps_the_source(
    client,
    lab: Lab,
    store: Store,
) -> None:
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    source = lab.vm("web01").drives[0].path
    move_id = open_record(lab, store, req)
    lab.server.engine.inject({"kind": "corrupt_block", "vm": "web01"})
    pipeline.run_prechecks(client, store, move_id, req, OPTS)
    pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    pipeline.run_cutover(client, store, move_id, req)
    with pytest.raises(pipeline.StepFailed, match="Test-VHD failed"):
        pipeline.run_verify(client, store, move_id)
    with pytest.raises(pipeline.StepFailed, match="not verified"):
        pipeline.run_cleanup(client, store, move_id)
    assert lab.server.estate.local("hv01", source).exists()  # retained, never deleted


def test_failed_job_leaves_vm_on_source_and_says_so(client, lab: Lab, store: Store) -> None:
    req = MoveRequest(host="hv01", vm="web01", destination="E:\\VMs\\web01")
    move_id = open_record(lab, store, req)
    lab.server.engine.inject({"kind": "fail_at", "vm": "web01", "percent": 30})
    pipeline.run_prechecks(client, store, move_id, req, OPTS)
    with pytest.raises(pipeline.StepFailed, match="stays on its source"):
        pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    with pytest.raises(pipeline.StepFailed, match="still on the source"):
        pipeline.run_cutover(client, store, move_id, req)
    # retrying the copy works: the failed job's partial destination was removed by the host
    pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
    pipeline.run_cutover(client, store, move_id, req)


def test_copy_attaches_to_a_running_move_of_the_record(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, rate_scale=4)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with lab.client() as client:
            req = MoveRequest(host="hv01", vm="sql01", destination="E:\\VMs\\sql01")
            move_id = open_record(lab, store, req)
            pipeline.run_prechecks(client, store, move_id, req, OPTS)
            # a first run started the move and died; the record has the job
            start = client.start_move(lab.vm("sql01").id, "all", destination="E:\\VMs\\sql01")
            store.update(move_id, job_id=start.job.job_id)
            result = pipeline.run_copy(client, store, move_id, req, poll_s=0.05)
            assert not result["started_here"]
            assert len(lab.server.engine.jobs_of(lab.vm("sql01").id)) == 1
    finally:
        lab.server.stop()


def test_share_without_delegation_fails_prechecks_with_the_double_hop_remedy(
    tmp_path: Path,
) -> None:
    from hvmove.hyperv.errors import ScriptError
    from hvmove.lab.build import add_vm

    def populate(estate) -> None:
        estate.host("hv01").smb_delegation = False  # hv02 keeps its delegation
        add_vm(estate, "hv01", "web01", disks=[(40 * GiB, 0.5, "Dynamic")])
        add_vm(estate, "hv02", "dc01", disks=[(20 * GiB, 0.5, "Dynamic")])

    lab = make_lab(tmp_path, populate=populate)
    share = "\\\\fs01\\vmstore\\VMs"
    try:
        with lab.client("hv01") as client:
            req = MoveRequest(host="hv01", vm="web01", destination=f"{share}\\web01")
            report = prechecks.run(client, req, OPTS).report
            check = next(c for c in report.checks if c.name == "destination path")
            assert check.status == "fail" and not report.ok
            assert "Enable-SmbDelegation -SmbServer fs01 -SmbClient hv01" in check.remedy
            # and the lab refuses the move itself the way VMMS does, so the check is not idle
            with pytest.raises(ScriptError, match="0x80070005"):
                client.start_move(lab.vm("web01").id, "all", destination=f"{share}\\web01")
        with lab.client("hv02") as other:
            req = MoveRequest(host="hv02", vm="dc01", destination=f"{share}\\dc01")
            report = prechecks.run(other, req, OPTS).report
            assert report.ok, report.reason()
    finally:
        lab.server.stop()


# -- the other two Move Wizard modes: per component, and chosen disks only -----------------------
SQL_DATA = "D:\\VMs\\sql01\\Virtual Hard Disks\\sql01-data1.vhdx"


def test_components_mode_moves_what_it_names_and_resumes_as_done(
    client, lab: Lab, store: Store
) -> None:
    req = MoveRequest(
        host="hv01",
        vm="sql01",
        mode="components",
        virtual_machine_path="F:\\VMs\\sql01",
        vhds=[{"source": SQL_DATA, "destination": "F:\\Data\\sql01-data1.vhdx"}],
    )
    move_id = open_record(lab, store, req)
    run_all(client, store, move_id, req)
    record = store.get(move_id)
    assert record.verified and record.source_removed, record.reason
    paths = client.vm_paths(lab.vm("sql01").id)
    assert paths.configuration_location == "F:\\VMs\\sql01"
    assert sorted(paths.disk_paths) == [
        "D:\\VMs\\sql01\\Virtual Hard Disks\\sql01.vhdx",  # not named: stays
        "F:\\Data\\sql01-data1.vhdx",
    ]
    assert not lab.server.estate.local("hv01", SQL_DATA).exists()
    # the same request again (a rerun after a crash past the switch) is already done
    again = prechecks.run(client, req, OPTS).report
    assert again.ok and again.already_done
    assert pipeline.run_copy(client, store, move_id, req, poll_s=0.05)["skipped"]
    pipeline.run_cutover(client, store, move_id, req)


def test_vhds_mode_to_a_share_moves_only_the_listed_disk(client, lab: Lab, store: Store) -> None:
    source = lab.vm("web01").drives[0].path
    target = "\\\\fs01\\vmstore\\web01\\web01.vhdx"
    req = MoveRequest(
        host="hv01", vm="web01", mode="vhds", vhds=[{"source": source, "destination": target}]
    )
    move_id = open_record(lab, store, req)
    run_all(client, store, move_id, req)
    record = store.get(move_id)
    assert record.verified and record.source_removed, record.reason
    paths = client.vm_paths(lab.vm("web01").id)
    assert paths.disk_paths == [target]
    assert paths.configuration_location == "D:\\VMs\\web01"  # configuration not named: stays
    assert prechecks.run(client, req, OPTS).report.already_done


def test_a_source_that_is_not_a_disk_of_the_vm_fails_prechecks(client, lab: Lab) -> None:
    req = MoveRequest(
        host="hv01",
        vm="web01",
        mode="vhds",
        vhds=[{"source": "D:\\VMs\\web01\\other.vhdx", "destination": "E:\\x\\other.vhdx"}],
    )
    report = prechecks.run(client, req, OPTS).report
    assert not report.ok and "disk" in names(report, "fail")
