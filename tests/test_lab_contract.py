"""Every project script through real pypsrp against the lab: parameters in, contract JSON out."""

from __future__ import annotations

import pytest

from hvmove import models
from hvmove.hyperv import errors as e
from hvmove.hyperv.catalog import SPECS
from tests.conftest import GiB, Lab


def test_host_facts(client) -> None:
    facts = client.host_facts()
    assert facts.name == "HV01"
    assert facts.maximum_storage_migrations == 2
    assert facts.running_storage_moves == 0
    assert facts.os_version.startswith("10.0")


def test_inventory_reports_chains_checkpoints_and_isos(client, lab: Lab) -> None:
    inv = client.inventory()
    by_name = {vm.name: vm for vm in inv.vms}
    assert set(by_name) == {"web01", "sql01", "app01", "iso01"}  # hv02's dc01 is not here
    sql = by_name["sql01"]
    assert [d.chain[0].type for d in sql.drives] == ["Fixed", "Dynamic"]
    assert 60 * GiB <= sql.drives[0].chain[0].file_size < 61 * GiB  # fixed: on disk ~ virtual
    assert sql.drives[1].chain[0].size == 20 * GiB
    assert sql.drives[1].chain[0].file_size < 20 * GiB
    app = by_name["app01"]
    assert app.state == "Off" and len(app.checkpoints) == 2
    chain = app.drives[0].chain
    assert [c.type for c in chain] == ["Differencing", "Differencing", "Dynamic"]
    assert chain[0].parent_path == chain[1].path and chain[1].parent_path == chain[2].path
    assert len(app.vhd_files()) == 3
    assert by_name["iso01"].dvd_paths == ["D:\\ISO\\setup.iso"]
    one = client.inventory(vm_id=sql.id)
    assert [vm.name for vm in one.vms] == ["sql01"]


def test_volume_info_local_and_smb(client) -> None:
    report = client.volumes(["D:\\VMs\\web01", "E:\\new\\place", "\\\\fs01\\vmstore\\x"])
    d, e_, smb = report.volumes
    assert (d.volume, d.kind, d.exists) == ("D:\\", "local", True)
    assert (e_.volume, e_.exists) == ("E:\\", False)
    assert smb.kind == "smb" and smb.capacity >= smb.free > 0
    assert d.free < d.capacity  # the VMs' files count against the volume
    every = client.volumes([]).volumes
    assert [v.volume for v in every] == ["C:\\", "D:\\", "E:\\", "F:\\"]


def test_odx_between_volumes(client) -> None:
    same_array = client.odx("D:\\VMs", "E:\\VMs")
    assert same_array.odx and same_array.source_array == same_array.destination_array
    other = client.odx("D:\\VMs", "F:\\VMs")
    assert not other.odx and "does not support ODX" in other.reason


def test_bandwidth_probe_measures_and_cleans_up(client, lab: Lab) -> None:
    probe = client.bandwidth("E:\\probe", 256)
    assert probe.bytes == 256 * 1024 * 1024
    # E: is a 600 MB/s volume (times the lab's rate scale). Only the cap is asserted: a loaded
    # machine measures less, never more (no timed lower bound in tests)
    expected = 600 * lab.server.estate.settings.rate_scale
    assert 0 < probe.write_mbps < expected * 1.5, probe
    assert probe.path.startswith("E:\\hvmove-probe-")  # E:\probe does not exist: nothing created
    assert not (lab.dir / "hosts/hv01/E/probe").exists()
    assert not list((lab.dir / "hosts/hv01/E").iterdir())


def test_vm_paths_vhd_facts_and_remove(client, lab: Lab) -> None:
    web = lab.vm("web01")
    paths = client.vm_paths(web.id)
    assert paths.state == "Running" and paths.disk_paths == [web.drives[0].path]
    facts = client.vhd_facts([web.drives[0].path, "D:\\nothing.vhdx"])
    ok, missing = facts.disks
    assert ok.exists and ok.test_ok and ok.vhd and ok.vhd.attached
    assert not missing.exists and missing.test_ok is None
    # a referenced disk is refused, and so is a "disk" Get-VHD cannot read (it might be in use);
    # an unreferenced file and its emptied folder go
    stray = lab.dir / "hosts/hv01/D/old/leftover.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    torn = lab.dir / "hosts/hv01/D/bad/torn.vhdx"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"x")
    report = client.remove_files(
        [web.drives[0].path, "D:\\old\\leftover.tmp", "D:\\old\\gone.vhdx", "D:\\bad\\torn.vhdx"],
        ["D:\\old", "D:\\VMs\\web01"],
    )
    assert [r.path for r in report.refused] == [web.drives[0].path, "D:\\bad\\torn.vhdx"]
    assert "Get-VHD failed" in report.refused[1].reason and torn.exists()
    assert report.removed == ["D:\\old\\leftover.tmp"]
    assert report.absent == ["D:\\old\\gone.vhdx"]
    assert report.folders_removed == ["D:\\old"]
    assert [k.path for k in report.folders_kept] == ["D:\\VMs\\web01"]
    assert (lab.dir / "hosts/hv01/D/VMs/web01/Virtual Hard Disks/web01.vhdx").exists()


def test_values_arrive_exactly_as_sent(client, lab: Lab) -> None:
    nasty = 'D:\\VMs\\it\'s "q"; $(Remove-Item C:\\ -Recurse) `whoami` ü 日本\\x'
    report = client.volumes([nasty])
    assert report.volumes[0].path == nasty
    host, script, params = lab.server.scripts.calls[-1]
    assert (host, script) == ("hv01", "Get-VolumeInfo")
    assert params == {"Path": [nasty]}


def test_unknown_vm_is_a_permanent_script_error(client) -> None:
    with pytest.raises(e.ScriptError, match="not found on this host"):
        client.vm_paths("00000000-0000-0000-0000-000000000000")


def test_unknown_script_and_unknown_parameter_are_refused(client, lab: Lab) -> None:
    from pypsrp.powershell import PowerShell

    pool = client._ensure_pool()
    ps = PowerShell(pool)
    ps.add_script("Get-VM | Remove-VM -Force")
    ps.invoke()
    assert ps.had_errors and "does not know this script" in str(ps.streams.error[0])
    with pytest.raises(TypeError, match="no parameter"):
        client.run("Get-HostFacts", Bogus=1)


def test_every_script_has_a_lab_implementation(lab: Lab) -> None:
    assert set(lab.server.scripts.handlers) == set(SPECS)


def test_https_with_certificate_validation(tmp_path) -> None:
    from tests.conftest import make_lab

    lab = make_lab(tmp_path, https=True)
    try:
        host = lab.config.hosts[0]
        assert host.transport == "https" and host.cert_validation and host.ca_file
        with lab.client() as c:
            assert isinstance(c.host_facts(), models.HostFacts)
        # the same lab without trusting its certificate: refused, and says why
        host.ca_file = None
        with lab.client() as c, pytest.raises(e.TlsError, match="certificate"):
            c.host_facts()
    finally:
        lab.server.stop()


# -- how hvmove logs on: Negotiate (the default) and Basic ---------------------------------------
def test_negotiate_over_http_seals_every_message(client, lab: Lab) -> None:
    """The production default on port 5985: NTLM logon, then WinRM message encryption."""
    assert lab.config.hosts[0].auth == "negotiate" and lab.config.hosts[0].transport == "http"
    before = lab.server.endpoint.sealed_requests
    assert client.host_facts().name == "HV01"
    assert client.inventory().vms
    endpoint = lab.server.endpoint
    assert endpoint.logons["negotiate"] >= 1 and endpoint.logons["basic"] == 0
    assert endpoint.sealed_requests - before >= 4  # create, command, receive... each sealed


def test_negotiate_over_https_checks_the_channel_binding(tmp_path) -> None:
    from tests.conftest import make_lab

    lab = make_lab(tmp_path, https=True)
    try:
        with lab.client() as c:
            assert c.host_facts().name == "HV01"
        assert lab.server.endpoint.logons["negotiate"] >= 1
        assert lab.server.endpoint.sealed_requests == 0  # TLS protects the messages
        # a binding to another certificate (a TLS-intercepting proxy) fails the logon
        lab.server.endpoint._cbt = b"tls-server-end-point:" + b"\0" * 32
        with lab.client() as c, pytest.raises(e.AuthenticationFailed):
            c.host_facts()
    finally:
        lab.server.stop()


def test_basic_over_https_still_works(tmp_path) -> None:
    from tests.conftest import make_lab

    lab = make_lab(tmp_path, https=True, auth="basic")
    try:
        assert lab.config.hosts[0].auth == "basic"
        with lab.client() as c:
            assert c.host_facts().name == "HV01"
        assert lab.server.endpoint.logons["basic"] >= 1
        assert lab.server.endpoint.logons["negotiate"] == 0
    finally:
        lab.server.stop()
