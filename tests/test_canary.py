"""`hvmove canary` against the lab: both move paths through the pipeline's steps, every premise
reported either way, and nothing left behind - not even after a canary killed mid-move."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvmove import canary
from hvmove.lab.estate import LabPremises
from hvmove.models_doctor import CanaryCreated
from tests.conftest import Lab

P, Q = "D:\\VMs", "E:\\"


def _tree(lab: Lab) -> list[str]:
    """Every file and folder on the lab's volumes (what a canary could leave behind)."""
    roots = [lab.dir / "hosts", lab.dir / "shared"]
    return sorted(str(p.relative_to(lab.dir)) for r in roots for p in r.rglob("*"))


def _vms(lab: Lab) -> list[str]:
    return sorted(vm.name for vm in lab.server.estate.data.vms)


def _slow_copies(lab: Lab) -> None:
    """A move of about a second: still running when the session that started it closes."""
    for vol in lab.server.estate.data.volumes:
        if vol.root in ("D:\\", "E:\\"):
            vol.bandwidth_mbps = 200


def _premises(report: canary.CanaryReport) -> dict[str, bool | None]:
    return {p.name: p.observed for p in report.premises}


def test_canary_moves_on_both_paths_and_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    _slow_copies(lab)
    tree, vms = _tree(lab), _vms(lab)
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    assert report.ok, report.markdown()
    steps = [s.name for s in report.steps]
    for path in ("keep-source path", "plain Move-VMStorage"):
        assert [s for s in steps if s.startswith(path)] == [
            f"{path}: {step}" for step in ("prechecks", "copy", "cutover", "verify", "cleanup")
        ]
    assert _premises(report) == {
        "keep-source path: job visible after the starting session closed": True,
        "keep-source path: source kept at the switch": True,
        "brackets in a disk name taken literally": True,
        "Test-VHD on an attached disk": True,
        "known pattern intact after the moves": True,
        "host messages in English": True,
        # the lab's default answer (premise unnamed_parents_move_with_child false): it stays
        "a parent no drive attaches moved with its child (mode all)": False,
        "plain Move-VMStorage: job visible after the starting session closed": True,
        "plain Move-VMStorage: source removed at the switch": True,
        "cluster configuration refreshed after the move": None,
    }
    assert report.removal.folders_removed == [f"{P}\\{report.vm_name}", f"{Q}{report.vm_name}"]
    assert report.left_behind == []
    assert _tree(lab) == tree and _vms(lab) == vms
    # the child disk carried brackets through both moves
    created = next(s for s in report.steps if s.name == "create the canary VM")
    assert "[child].vhdx" in created.detail
    json_path, md_path = canary.write(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["canary_id"] == report.canary_id
    assert "| brackets in a disk name taken literally | yes |" in md_path.read_text()


def test_each_premise_comes_out_the_other_way(lab: Lab) -> None:
    lab.server.estate.settings.premises = LabPremises(
        jobs_survive_session_close=False,
        test_vhd_attached_ok=False,
        literal_paths=False,
        avoid_removing_vhds_honoured=False,
        move_vmstorage_removes_source=False,
        unnamed_parents_move_with_child=True,
    )
    lab.server.estate.host("hv01").ui_culture = "de-DE"
    _slow_copies(lab)
    tree = _tree(lab)
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    seen = _premises(report)
    assert seen["keep-source path: job visible after the starting session closed"] is False
    assert seen["plain Move-VMStorage: job visible after the starting session closed"] is False
    assert seen["brackets in a disk name taken literally"] is False
    assert seen["Test-VHD on an attached disk"] is False
    assert seen["host messages in English"] is False
    assert seen["known pattern intact after the moves"] is True
    assert seen["keep-source path: source kept at the switch"] is False
    assert seen["plain Move-VMStorage: source removed at the switch"] is False
    assert seen["a parent no drive attaches moved with its child (mode all)"] is True
    why = {p.name: p.impact for p in report.premises}
    died = why["plain Move-VMStorage: job visible after the starting session closed"]
    assert "keep the starting session open" in died
    assert "finding 5" in why["brackets in a disk name taken literally"]
    assert "localized" in why["host messages in English"]
    assert "did NOT survive" in why["keep-source path: source kept at the switch"]
    assert "cleanup removes it" in why["plain Move-VMStorage: source removed at the switch"]
    # the move that died with its session was started again; the run still completed and cleaned
    assert report.ok, report.markdown()
    assert _tree(lab) == tree


def _leftover(lab: Lab, canary_id: str) -> CanaryCreated:
    name = canary.PREFIX + canary_id
    with lab.client("hv01") as client:
        return client.call(
            "New-CanaryVM",
            CanaryCreated,
            Name=name,
            Path=f"{P}\\{name}",
            MarkerFolder=[f"{Q}{name}"],
            Marker=json.dumps({"hvmove_canary": canary_id}),
        )


def test_leftovers_are_found_by_prefix_and_marker_and_nothing_else(lab: Lab) -> None:
    tree, vms = _tree(lab), _vms(lab)
    left = _leftover(lab, "0ld0ne")  # a canary that died before it could clean up
    d = lab.dir / "hosts" / "hv01" / "D" / "VMs"
    unmarked = d / "hvmove-canary-0000dead"  # the prefix alone is not enough
    unmarked.mkdir()
    (unmarked / "someone-elses.vhdx").write_bytes(b"data")
    foreign = d / "hvmove-canary-0000beef"  # a marker naming another canary
    foreign.mkdir()
    (foreign / "hvmove-canary.marker").write_text('{"hvmove_canary": "0ld0ne"}')
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    assert report.ok, report.markdown()
    assert [i.reason for i in report.leftovers_removed.vms_removed] == [left.name]
    assert sorted(report.leftovers_removed.folders_removed) == [
        f"{P}\\{left.name}",
        f"{Q}{left.name}",
    ]
    kept = {k.path: k.reason for k in report.leftovers_removed.kept}
    assert kept == {
        f"{P}\\hvmove-canary-0000beef": "no marker file naming this canary",
        f"{P}\\hvmove-canary-0000dead": "no marker file naming this canary",
    }
    assert (unmarked / "someone-elses.vhdx").read_bytes() == b"data"
    assert (foreign / "hvmove-canary.marker").exists()
    assert sorted(set(_tree(lab)) - set(tree)) == [
        str(p.relative_to(lab.dir))
        for p in sorted(
            [unmarked, unmarked / "someone-elses.vhdx", foreign, foreign / "hvmove-canary.marker"]
        )
    ]
    assert _vms(lab) == vms


def test_a_canary_vm_using_files_outside_its_marked_folders_is_kept(lab: Lab) -> None:
    left = _leftover(lab, "0ther")
    vm = lab.server.estate.vm("hv01", left.vm_id)
    assert vm is not None
    vm.drives[0].path = lab.vm("web01").drives[0].path  # now it uses a production disk
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    kept = {k.path: k.reason for k in report.leftovers_removed.kept}
    assert "not in a marked canary folder" in kept[left.vm_id]
    assert left.name in _vms(lab)
    assert (lab.dir / "hosts" / "hv01" / "D" / "VMs" / "web01").exists()


@pytest.mark.slow
def test_killed_mid_move_then_run_again_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    tree, vms = _tree(lab), _vms(lab)
    for vol in lab.server.estate.data.volumes:  # about 30 s per move: time to kill it mid-copy
        if vol.root in ("D:\\", "E:\\"):
            vol.bandwidth_mbps = 7
    env = {k: v for k, v in os.environ.items() if k != "HVMOVE_LAB_PASSWORD"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hvmove.cli", "canary", "--host", "hv01", "--path", P, "--to", Q],
        cwd=lab.dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not any(j.running and j.percent > 0 for j in lab.server.engine.jobs)
            and time.monotonic() < deadline
        ):
            assert proc.poll() is None, "the canary ended before its move started"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert any(vm.startswith(canary.PREFIX) for vm in _vms(lab))  # it was mid-move
    assert any(j.running for j in lab.server.engine.jobs)
    for vol in lab.server.estate.data.volumes:
        vol.bandwidth_mbps = 600
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    assert report.ok, report.markdown()
    assert len(report.leftovers_removed.vms_removed) == 1
    assert len(report.leftovers_removed.folders_removed) == 2
    assert _tree(lab) == tree and _vms(lab) == vms


def test_a_folder_that_does_not_exist_is_refused_before_anything_is_made(lab: Lab) -> None:
    tree, vms = _tree(lab), _vms(lab)
    report = canary.run(lab.config, "hv01", "D:\\NoSuchFolder", Q, poll_s=0.1)
    assert not report.ok
    assert "D:\\NoSuchFolder' does not exist" in report.error
    assert _tree(lab) == tree and _vms(lab) == vms


def test_a_failed_move_still_reports_the_probes_and_leaves_nothing(lab: Lab) -> None:
    tree, vms = _tree(lab), _vms(lab)
    # the keep-source copy lands with a corrupt block: verification fails, the run stops there
    lab.server.engine.inject({"kind": "corrupt_block"})
    report = canary.run(lab.config, "hv01", P, Q, poll_s=0.1)
    assert not report.ok
    assert "verification failed" in report.error
    failed = [s.name for s in report.steps if not s.ok]
    assert failed == ["keep-source path: verify"]
    assert "brackets in a disk name taken literally" in _premises(report)
    assert report.left_behind == [] and report.removal.kept == []
    assert _tree(lab) == tree and _vms(lab) == vms


def test_hostile_folder_names(lab: Lab) -> None:
    """Brackets, quotes, '$' and Unicode in P and Q travel as parameters, come back as written."""
    odd_p, odd_q = "D:\\VMs [x] $y 'q' ü", 'E:\\Ziel "z" $(1)'
    (lab.dir / "hosts/hv01/D/VMs [x] $y 'q' ü").mkdir()
    (lab.dir / 'hosts/hv01/E/Ziel "z" $(1)').mkdir()
    tree, vms = _tree(lab), _vms(lab)
    report = canary.run(lab.config, "hv01", odd_p, odd_q, poll_s=0.1)
    assert report.ok, report.markdown()
    assert report.removal.folders_removed == [
        f"{odd_p}\\{report.vm_name}",
        f"{odd_q}\\{report.vm_name}",
    ]
    assert _tree(lab) == tree and _vms(lab) == vms
