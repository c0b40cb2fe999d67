"""Mode `all` (and `components`) of a VM whose disk has a parent no drive or checkpoint attaches
(a golden image): whether Hyper-V carries it along is not documented (tests/test_unnamed_parents.py
cites what the documentation says); the lab answers either way (premise
`unnamed_parents_move_with_child`). Both answers must end in a verified move: the switch is judged
by what the VM attaches, the parent is recorded where the child's ParentPath says it is, and its
source copy is deleted only when it moved and no VM uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hvmove import pipeline, prechecks, reports
from hvmove.models import MoveRequest
from hvmove.store import Store
from tests.conftest import GiB, make_lab

OPTS = prechecks.Options(headroom_percent=10, probe_mib=16, probe=False)
GOLDEN = "D:\\Golden\\base.vhdx"
CHILD = "D:\\VMs\\gold02\\Virtual Hard Disks\\gold02.vhdx"
DEST = "E:\\VMs\\gold02"
LANDING = f"{DEST}\\Virtual Hard Disks\\base.vhdx"
MOVED_CHILD = f"{DEST}\\Virtual Hard Disks\\gold02.vhdx"


def _child_of_golden(estate, name: str) -> None:
    from hvmove.lab.build import add_vm, make_disk

    vm = add_vm(estate, "hv01", name, state="Off")
    child = vm.drives[0].path
    assert child is not None
    make_disk(
        estate, "hv01", child, size=8 * GiB, file_size=GiB // 2, type_="Differencing", parent=GOLDEN
    )


def _golden(estate, *, other_user: bool) -> None:
    """gold02: its only disk a differencing child of D:\\Golden\\base.vhdx, which no drive
    attaches; with other_user, VM gold03 on the same host is another child of it."""
    from hvmove.lab.build import make_disk

    make_disk(estate, "hv01", GOLDEN, size=8 * GiB, file_size=2 * GiB, type_="Dynamic")
    _child_of_golden(estate, "gold02")
    if other_user:
        _child_of_golden(estate, "gold03")


def _all() -> MoveRequest:
    return MoveRequest(host="hv01", vm="gold02", destination=DEST)


def _components() -> MoveRequest:
    return MoveRequest.model_validate(
        {
            "host": "hv01",
            "vm": "gold02",
            "mode": "components",
            "virtual_machine_path": DEST,
            "vhds": [{"source": CHILD, "destination": MOVED_CHILD}],
        }
    )


def _move(tmp_path: Path, req: MoveRequest, carried: bool, other_user: bool = False):
    """Every step of the move, and the cutover run again (a rerun after the switch); returns
    the lab, the record and the facts of the child, the golden image and its landing."""
    lab = make_lab(tmp_path, populate=lambda e: _golden(e, other_user=other_user))
    lab.server.estate.settings.premises.unnamed_parents_move_with_child = carried
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    vm = lab.vm("gold02")
    move_id = store.open_move(
        host="hv01", vm_id=vm.id, vm_name=vm.name, request=req.model_dump(mode="json")
    ).id
    with lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, req, OPTS)
        pipeline.run_copy(client, store, move_id, req, poll_s=0.02)
        cutover = pipeline.run_cutover(client, store, move_id, req)
        pipeline.run_verify(client, store, move_id)
        pipeline.run_cleanup(client, store, move_id)
        assert pipeline.run_cutover(client, store, move_id, req)["parents"] == cutover["parents"]
        facts = {d.path: d for d in client.vhd_facts([MOVED_CHILD, GOLDEN, LANDING]).disks}
    return lab, store.get(move_id), cutover, facts


def _kept(record: Any) -> dict[str, str]:
    return {k["path"]: k["reason"] for k in record.cleanup["kept"]}


@pytest.mark.parametrize("req", [_all(), _components()], ids=["all", "components"])
def test_a_parent_hyperv_leaves_in_place_ends_verified_and_kept(tmp_path: Path, req) -> None:
    lab, record, cutover, facts = _move(tmp_path, req, carried=False)
    try:
        assert record.verified, record.verification
        assert cutover["parents"] == [{"source": GOLDEN, "now": GOLDEN, "moved": False}]
        assert facts[MOVED_CHILD].vhd.parent_path == GOLDEN
        assert facts[GOLDEN].exists and not facts[LANDING].exists
        # the chain as it really is: the parent's row compares it with itself at the source
        rows = {r["path"]: r for r in record.verification["disks"]}
        assert rows[GOLDEN]["same"]["disk_identifier"] and rows[MOVED_CHILD]["same"]["parent"]
        assert record.verification["parents"] == cutover["parents"]
        assert GOLDEN not in record.cleanup["removed"]
        if req.mode == "all":
            # listed in the move's report: the moved child still references it
            assert "references" in _kept(record)[GOLDEN]
            assert f"- `{GOLDEN}`: a virtual machine references" in reports.move_markdown(
                record, {}
            )
        assert f"- `{GOLDEN}`: left in place" in reports.move_markdown(record, {})
    finally:
        lab.server.stop()


@pytest.mark.parametrize("other_user", [False, True], ids=["alone", "gold03-uses-it"])
def test_a_parent_hyperv_carries_is_removed_only_when_no_vm_uses_it(
    tmp_path: Path, other_user: bool
) -> None:
    lab, record, cutover, facts = _move(tmp_path, _all(), carried=True, other_user=other_user)
    try:
        assert record.verified, record.verification
        assert cutover["parents"] == [{"source": GOLDEN, "now": LANDING, "moved": True}]
        assert facts[MOVED_CHILD].vhd.parent_path == LANDING and facts[LANDING].exists
        rows = {r["path"]: r for r in record.verification["disks"]}
        assert rows[LANDING]["moved_from"] == GOLDEN and all(rows[LANDING]["same"].values())
        assert f"- `{GOLDEN}`: moved to `{LANDING}`" in reports.move_markdown(record, {})
        assert facts[GOLDEN].exists is other_user
        if other_user:
            assert "references" in _kept(record)[GOLDEN]
        else:
            assert GOLDEN in record.cleanup["removed"]
    finally:
        lab.server.stop()


def test_components_carrying_the_parent_keeps_its_source(tmp_path: Path) -> None:
    """Modes components and vhds never delete a parent the request does not name."""
    lab, record, cutover, facts = _move(tmp_path, _components(), carried=True)
    try:
        assert record.verified, record.verification
        assert cutover["parents"] == [{"source": GOLDEN, "now": LANDING, "moved": True}]
        assert facts[LANDING].exists and facts[GOLDEN].exists
        assert GOLDEN not in record.cleanup["removed"]
        # verified where it really landed, against its own facts from before the move
        rows = {r["path"]: r for r in record.verification["disks"]}
        assert rows[LANDING]["moved_from"] == GOLDEN and all(rows[LANDING]["same"].values())
    finally:
        lab.server.stop()
