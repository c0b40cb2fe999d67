"""Parents of differencing disks in the prechecks: a parent that is not attached anywhere (a
golden image under a VM's disk) is moved along with its child (Move-VMStorage's
-RetainVhdCopiesOnSource / -RemoveSourceUnmanagedVhds speak of it), so its file name and its
destination file count like any disk's (issue 10, finding 11)."""

from __future__ import annotations

from pathlib import Path

from hvmove import prechecks
from hvmove.models import MoveRequest
from tests.conftest import GiB, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)
GOLDEN = "D:\\Golden\\base.vhdx"


def _golden_vm(estate) -> None:
    """gold01: disk 0 a differencing child of D:\\Golden\\base.vhdx; disk 1 is also named
    base.vhdx (another folder), so the two collide in one destination folder."""
    from hvmove.lab.build import add_vm, make_disk
    from hvmove.lab.estate import LabDrive

    make_disk(estate, "hv01", GOLDEN, size=8 * GiB, file_size=2 * GiB, type_="Dynamic")
    vm = add_vm(estate, "hv01", "gold01", state="Off")
    child = vm.drives[0].path
    assert child is not None
    make_disk(
        estate,
        "hv01",
        child,
        size=8 * GiB,
        file_size=GiB // 2,
        type_="Differencing",
        parent=GOLDEN,
    )
    other = "D:\\VMs\\gold01\\Data\\base.vhdx"
    make_disk(estate, "hv01", other, size=GiB, file_size=GiB // 4, type_="Dynamic")
    vm.drives.append(LabDrive(controller_location=1, path=other))


def _names(report, status: str) -> set[str]:
    return {c.name for c in report.checks if c.status == status}


CHILD = "D:\\VMs\\gold01\\Virtual Hard Disks\\gold01.vhdx"
DATA = "D:\\VMs\\gold01\\Data\\base.vhdx"


def _vhds(pairs: list[tuple[str, str]]) -> MoveRequest:
    return MoveRequest.model_validate(
        {
            "host": "hv01",
            "vm": "gold01",
            "mode": "vhds",
            "vhds": [{"source": s, "destination": d} for s, d in pairs],
        }
    )


def test_parents_count_in_names_and_existing_destinations(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, populate=_golden_vm)
    try:
        with lab.client() as c:
            every = prechecks.run(
                c, MoveRequest(host="hv01", vm="gold01", destination="E:\\x"), OPTS
            ).report
            # the parent D:\Golden\base.vhdx lands beside its child, on the data disk's name
            collide = prechecks.run(
                c, _vhds([(CHILD, "E:\\y\\gold01.vhdx"), (DATA, "E:\\y\\base.vhdx")]), OPTS
            ).report
            apart = prechecks.run(
                c, _vhds([(CHILD, "E:\\y\\gold01.vhdx"), (DATA, "E:\\w\\base.vhdx")]), OPTS
            ).report
            other_golden = lab.dir / "hosts/hv01/E/z/base.vhdx"
            other_golden.parent.mkdir(parents=True)
            other_golden.write_bytes(b"another VM's copy of the golden image")
            exists = prechecks.run(c, _vhds([(CHILD, "E:\\z\\gold01.vhdx")]), OPTS).report
        assert "file names" in _names(every, "fail")
        names = next(ch for ch in collide.checks if ch.name == "file names")
        assert names.status == "fail" and "base.vhdx" in names.detail and names.remedy
        assert "file names" not in _names(apart, "fail")
        dest = next(ch for ch in exists.checks if ch.name == "destination files")
        assert dest.status == "fail" and "E:\\z\\base.vhdx" in dest.detail and dest.remedy
    finally:
        lab.server.stop()
