"""Windows PowerShell 5.1 and Hyper-V as documented, not as hoped (issue 10): scripts in local
scope (#5), errors classified without reading their (localized) text (#7)."""

from __future__ import annotations

import pytest

from hvmove.hyperv import errors as e
from tests.conftest import Lab


def test_every_script_runs_in_local_scope(client, lab: Lab) -> None:
    client.host_facts()
    client.inventory()
    client.vm_paths(lab.vm("web01").id)
    scopes = lab.server.scripts.scopes
    assert len(scopes) == 3 and all(s is True for s in scopes), scopes


@pytest.mark.parametrize(("culture", "word"), [("de-DE", "Zustand"), ("ja-JP", "状態")])
def test_a_busy_vm_is_busy_on_a_host_in_any_language(
    client, lab: Lab, culture: str, word: str
) -> None:
    lab.server.estate.host("hv01").ui_culture = culture
    vm = lab.vm("web01")
    lab.server.estate.vm("hv01", vm.id).busy = "backup"
    with pytest.raises(e.HostBusy) as busy:
        client.start_move(vm.id, "all", destination="E:\\VMs\\web01")
    assert word in str(busy.value) and "current state" not in str(busy.value)


def test_a_permanent_refusal_stays_permanent_in_german(client, lab: Lab) -> None:
    lab.server.estate.host("hv01").ui_culture = "de-DE"
    vm = lab.vm("web01")
    target = lab.server.estate.local("hv01", "E:\\VMs\\web01\\Virtual Hard Disks\\web01.vhdx")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    with pytest.raises(e.ScriptError, match="bereits vorhanden") as refused:
        client.start_move(vm.id, "all", destination="E:\\VMs\\web01")
    assert not isinstance(refused.value, e.HostBusy)


def test_classification_reads_ids_categories_and_hresults_only() -> None:
    assert e.is_busy("HvmoveMigrationLimit,Invoke-HvmStorageMove", 14, None)
    assert e.is_busy("Anything", 19, None)  # ResourceBusy
    assert e.is_busy("Anything", 7, -2147019873)  # 0x8007139F as a signed Int32
    assert e.is_busy("HvmoveWmiReturn32775", 7, None)
    assert not e.is_busy(
        "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVMStorage", 7, 0x80070050
    )
    assert not e.is_busy("the migration limit was reached (English text)", 7, None)
