"""Cleanup compares file identity, not path text (issue 10 #8), and survives paths it cannot
reach (#2): Test-Path on a share without delegation writes an error that 'Stop' makes fatal."""

from __future__ import annotations

import pytest

from hvmove.lab.estate import LabDrive, LabVolume
from tests.conftest import Lab


def _alias(lab: Lab, root: str) -> None:
    """Another spelling of hv01's D: (a \\\\?\\ prefix, a mount point, the admin share)."""
    d = next(v for v in lab.server.estate.data.volumes if v.root == "D:\\" and "hv01" in v.hosts)
    lab.server.estate.data.volumes.append(
        LabVolume(root=root, dir=d.dir, hosts=["hv01"], capacity=d.capacity)
    )


@pytest.mark.parametrize(
    "root",
    ["\\\\?\\D:\\", "C:\\Mounts\\Data\\", "\\\\HV01\\D$\\"],
    ids=["prefix", "mount", "admin"],
)
def test_a_stopped_vms_disk_under_another_spelling_is_kept(client, lab: Lab, root: str) -> None:
    _alias(lab, root)
    vm = lab.vm("app01")  # Off: Get-VHD says Attached = False for its disks
    disk = vm.drives[0].path
    other = root + disk[len("D:\\") :]
    report = client.remove_files([other], [])
    assert [r.path for r in report.refused] == [other] and not report.removed
    assert "referenced under another name" in report.refused[0].reason
    assert lab.server.estate.local("hv01", disk).exists()
    refs = client.find_references([other], [])
    assert [r.path for r in refs.files] == [other]


def test_a_file_whose_identity_cannot_be_read_is_kept(client, lab: Lab) -> None:
    stray = lab.dir / "hosts/hv01/D/old/stray.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    lab.server.scripts.no_file_id = frozenset({"d:\\old\\stray.tmp"})
    report = client.remove_files(["D:\\old\\stray.tmp"], ["D:\\old"])
    assert "identity cannot be read" in report.refused[0].reason and stray.exists()
    assert [k.path for k in report.folders_kept] == ["D:\\old"]  # not empty: the file stayed


def test_a_vm_on_a_share_this_session_cannot_reach_does_not_break_cleanup(client, lab: Lab) -> None:
    """Without delegation, Test-Path on the share writes "Access is denied": the script records
    the chain as unread (every virtual disk is kept) and still deletes what is safe."""
    lab.server.estate.host("hv01").smb_delegation = False
    vm = lab.server.estate.vm("hv01", lab.vm("app01").id)
    vm.drives.append(LabDrive(path="\\\\fs01\\vmstore\\app01\\data.vhdx", controller_location=1))
    for name in ("stray.tmp", "stray.vhdx"):
        (lab.dir / "hosts/hv01/D/old").mkdir(parents=True, exist_ok=True)
        (lab.dir / "hosts/hv01/D/old" / name).write_bytes(b"x")
    report = client.remove_files(["D:\\old\\stray.tmp", "D:\\old\\stray.vhdx"], [])
    assert report.removed == ["D:\\old\\stray.tmp"]
    assert [r.path for r in report.refused] == ["D:\\old\\stray.vhdx"]
    assert "Access is denied" in report.refused[0].reason
    refs = client.find_references(["D:\\old\\stray.vhdx"], [])
    assert [r.path for r in refs.files] == ["D:\\old\\stray.vhdx"]
