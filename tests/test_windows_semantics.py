"""Windows PowerShell 5.1 and Hyper-V as documented, not as hoped (issue 10): scripts in local
scope (#5), errors classified without reading their (localized) text (#7)."""

from __future__ import annotations

import pytest

from hvmove.hyperv import errors as e
from hvmove.lab import vhd
from hvmove.lab.estate import LabDrive
from tests.conftest import Lab, make_lab


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


def _bracket_lab(tmp_path):
    from hvmove.lab.build import add_vm

    def populate(estate) -> None:
        add_vm(estate, "hv01", "web [prod]", state="Off", checkpoints=1)
        add_vm(estate, "hv02", "dc01")

    lab = make_lab(tmp_path, populate=populate)
    # the cmdlets resolve [prod] as a pattern, as the decompiled Get-VHD suggests (#10)
    lab.server.estate.settings.premises.literal_paths = False
    return lab


def test_disks_named_with_brackets_are_read_on_their_literal_path(tmp_path) -> None:
    """Get-VHD/Test-VHD -Path resolve wildcards: 'web [prod].vhdx' is read through
    Msvm_ImageManagementService on the literal path (#10)."""
    lab = _bracket_lab(tmp_path)
    try:
        with lab.client() as client:
            vm = client.inventory().vms[0]
            chain = vm.drives[0].chain
            assert len(chain) == 2 and chain[1].path.endswith("web [prod].vhdx")  # not cut short
            facts = client.vhd_facts([c.path for c in chain]).disks
            assert all(f.test_ok and f.vhd is not None for f in facts), facts
    finally:
        lab.server.stop()


def test_a_disk_of_unknown_type_does_not_break_the_inventory(client, lab: Lab) -> None:
    """VhdType and VhdFormat have Unknown = 0 (#11)."""
    path = lab.server.estate.local("hv01", lab.vm("web01").drives[0].path)
    header = vhd.read_header(path)
    header.type = "Unknown"
    with open(path, "r+b") as fh:
        fh.write(header.encode())
    vms = {v.name: v for v in client.inventory().vms}
    assert vms["web01"].drives[0].chain[0].type == "Unknown"
    assert "sql01" in vms


def test_one_unreachable_path_costs_only_its_own_volume_entry(client, lab: Lab) -> None:
    """Get-VolumeInfo reports per entry (#3); the inventory keeps the host's other volumes."""
    from hvmove.inventory import collect_host

    lab.server.estate.host("hv01").smb_delegation = False
    vm = lab.server.estate.vm("hv01", lab.vm("app01").id)
    vm.drives.append(LabDrive(path="\\\\fs01\\vmstore\\app01\\data.vhdx", controller_location=1))
    report = client.volumes(["D:\\VMs", "\\\\fs01\\vmstore\\app01"], partial=True).volumes
    assert report[0].volume == "D:\\" and not report[0].error
    assert "Access is denied" in report[1].error
    with pytest.raises(e.ScriptError, match="Access is denied"):
        client.volumes(["D:\\VMs", "\\\\fs01\\vmstore\\app01"])  # a precheck needs every path
    host = collect_host(client)
    assert {v.volume for v in host.volumes} >= {"C:\\", "D:\\", "E:\\", "F:\\"}
    assert all(v.volume and not v.error for v in host.volumes)


def test_a_cluster_shared_volume_not_mounted_here_is_not_the_system_volume(client) -> None:
    (entry,) = client.volumes(["C:\\ClusterStorage\\Volume9\\VMs"], partial=True).volumes
    assert "not mounted" in entry.error and entry.volume == ""
