"""Small rules with big consequences: the store refuses a misspelt field and reads history in a
bounded number of queries; an HTTP 400 retries a mutating script only when nothing ran; a
pass-through disk 0 is a disk, not "no disk"."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from hvmove import models
from hvmove.hyperv import errors as e
from hvmove.inventory import collect_host
from hvmove.store import Store, loaded_step_states
from tests.conftest import make_lab


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def new_move(store: Store, n: int) -> str:
    req = models.MoveRequest(host="hv01", vm=f"vm{n}", destination=f"E:\\VMs\\vm{n}")
    return store.open_move(
        host="hv01", vm_id=f"id-{n}", vm_name=f"vm{n}", request=req.model_dump(mode="json")
    ).id


def test_update_refuses_a_misspelt_field(store: Store) -> None:
    move_id = new_move(store, 1)
    with pytest.raises(TypeError, match="verifed"):
        store.update(move_id, verifed=True)
    store.update(move_id, verified=True, job_id="job-1")
    record = store.get(move_id)
    assert record.verified and record.job_id == "job-1"


def test_moves_reads_history_in_a_fixed_number_of_queries(store: Store) -> None:
    for n in range(12):
        move_id = new_move(store, n)
        store.step_started(move_id, "prechecks")
        store.step_ended(move_id, "prechecks", "completed")
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        rows = store.moves()
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(rows) == 12
    assert all([s.step for s in r.steps] == ["prechecks"] for r in rows)  # usable detached
    assert len(statements) <= 2, statements
    # what `hvmove history` prints per row comes from the loaded steps, not a query per row
    assert [loaded_step_states(r) for r in rows] == [store.step_states(r.id) for r in rows]


def _start_with_pool_open(client, lab, action: str):
    vm = lab.vm("web01")
    client.host_facts()  # the pool is open: the next Command/Receive are the script's
    lab.server.endpoint.faults.add(action=action, kind="status", code=400)
    return vm, client.start_move(vm.id, "all", destination="E:\\h400\\web01")


def starts(lab) -> int:
    return sum(1 for c in lab.server.scripts.calls if c[1] == "Start-StorageMove")


def test_http_400_while_receiving_a_mutating_reply_is_maybe_ran(client, lab) -> None:
    """Sealed-message 400 after the host accepted the command: a blind retry could run the
    move twice; the caller must look first."""
    with pytest.raises(e.MaybeRanError):
        _start_with_pool_open(client, lab, "Receive")
    assert starts(lab) == 1
    client.stop_move(lab.vm("web01").id)


def test_http_400_while_sending_is_retried_once_on_a_new_pool(client, lab) -> None:
    vm, start = _start_with_pool_open(client, lab, "Command")
    assert start.status == "started" and starts(lab) == 1
    client.stop_move(vm.id)


def test_http_400_on_a_read_is_retried_in_any_phase(client, lab) -> None:
    client.host_facts()
    lab.server.endpoint.faults.add(action="Receive", kind="status", code=400)
    assert client.host_facts().name == "HV01"


def test_inventory_keeps_pass_through_disk_zero_out_of_volume_lookups(tmp_path: Path) -> None:
    from hvmove.lab.build import add_vm

    def populate(estate) -> None:
        vm = add_vm(estate, "hv01", "pt00", pass_through=True)
        vm.drives[-1].disk_number = 0  # the first physical disk of the host

    lab = make_lab(tmp_path, populate=populate)
    try:
        with lab.client() as client:
            inv = collect_host(client)
        assert inv.error is None
        (vm,) = inv.vms
        assert [d.disk_number for d in vm.drives if d.pass_through] == [0]
        assert {v.volume for v in inv.volumes} >= {"D:\\"}
    finally:
        lab.server.stop()
