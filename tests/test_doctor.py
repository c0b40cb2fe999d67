"""`hvmove doctor` against the lab: a fresh lab passes and is not changed in any way; each broken
prerequisite (no rights, no delegation, wrong certificate name, WinRM limits too low, a script
whose output breaks its contract) fails the right check with the right remedy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmove import doctor
from hvmove.config import load
from hvmove.doctor.contracts import NotReadOnly, run_read_only
from hvmove.hyperv.catalog import SPECS
from hvmove.lab.build import add_vm
from hvmove.lab.process import write_config
from tests.conftest import Lab, make_lab


@pytest.fixture
def tls_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(tmp_path, https=True)
    _stop_guests(lab)
    yield lab
    lab.server.stop()


def _stop_guests(lab: Lab) -> None:
    """The guests of running VMs keep writing their disks; the estate must hold still."""
    for guest in lab.server.engine.guests.values():
        guest.stop.set()
        guest.thread.join(timeout=5)


def _snapshot(lab: Lab) -> dict[str, object]:
    files = {}
    for p in sorted(lab.dir.rglob("*")):
        rel = str(p.relative_to(lab.dir))
        if p.is_file() and not rel.startswith(("tls", "hvmove.db")):
            st = p.stat()
            files[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        elif p.is_dir():
            files[rel + "/"] = None
    return {
        "files": files,
        "estate": lab.server.estate.data.model_dump_json(),
        "jobs": [j.job_id for j in lab.server.engine.jobs],
    }


def _check(report: doctor.DoctorReport, host: str, name: str):
    h = next(h for h in report.hosts if h.host == host)
    return next(c for c in h.checks if c.name == name)


def test_fresh_lab_passes_and_nothing_changes(tls_lab: Lab) -> None:
    before = _snapshot(tls_lab)
    calls_before = len(tls_lab.server.scripts.calls)
    report = doctor.run(tls_lab.config)
    assert report.ok, report.markdown()
    assert {h.host for h in report.hosts} == {"hv01", "hv02"}
    names = {c.name for c in report.hosts[0].checks}
    assert {"reachable", "tls", "logon", "clock", "rights", "winrm quotas", "cluster"} <= names
    assert {f"script {s}" for s, spec in SPECS.items() if not spec.mutating} <= names
    # every check that can fail says how to fix it; none failed here
    assert all(c.status != "fail" for h in report.hosts for c in h.checks)
    assert _snapshot(tls_lab) == before
    called = {name for _host, name, _p in tls_lab.server.scripts.calls[calls_before:]}
    assert called and not [n for n in called if SPECS[n].mutating]


def test_doctor_refuses_a_mutating_script(lab: Lab) -> None:
    with lab.client("hv01") as client, pytest.raises(NotReadOnly):
        run_read_only(client, "Measure-Bandwidth", DestinationPath="D:\\", SizeMiB=1)
    assert not [c for c in lab.server.scripts.calls if c[1] == "Measure-Bandwidth"]


def _no_rights(lab: Lab) -> None:
    lab.server.estate.host("hv01").rights = "none"


def _no_delegation(lab: Lab) -> None:
    lab.server.estate.host("hv01").smb_delegation = False


def _few_shells(lab: Lab) -> None:
    lab.server.estate.host("hv01").winrm_max_shells_per_user = 2


def _short_idle(lab: Lab) -> None:
    lab.server.estate.host("hv01").winrm_idle_timeout_ms = 30_000


def _bad_contract(lab: Lab) -> None:
    lab.server.estate.host("hv01").contract_faults = {
        "Get-HostFacts": {"maximum_storage_migrations": "two"}
    }


def _no_avoid_removing(lab: Lab) -> None:
    lab.server.estate.host("hv01").avoid_removing_vhds = False


def _clock(lab: Lab) -> None:
    lab.server.estate.host("hv01").clock_offset_s = 900


@pytest.mark.parametrize(
    ("fault", "check", "detail", "remedy"),
    [
        (_no_rights, "rights", "neither", "Hyper-V Administrators"),
        (_no_delegation, "share \\\\fs01\\vmstore", "double hop", "'cifs'"),
        (_few_shells, "winrm quotas", "MaxShellsPerUser 2 < 4", "MaxShellsPerUser"),
        (_short_idle, "winrm quotas", "IdleTimeout 30000 ms", "IdleTimeout"),
        (_bad_contract, "script Get-HostFacts", "maximum_storage_migrations = 'two'", "bug"),
        (_clock, "clock", "+900", "w32tm"),
        (_no_avoid_removing, "keep source until verified", "AvoidRemovingVHDs", "false"),
    ],
    ids=[
        "no-rights",
        "no-delegation",
        "winrm-shells",
        "winrm-idle",
        "contract",
        "clock",
        "no-avoid-removing-vhds",
    ],
)
def test_broken_prerequisite_fails_with_its_remedy(
    lab: Lab, fault: Callable[[Lab], None], check: str, detail: str, remedy: str
) -> None:
    fault(lab)
    report = doctor.run(lab.config)
    hv01 = next(h for h in report.hosts if h.host == "hv01")
    found = _check(report, "hv01", check)
    assert found.status == "fail", hv01.model_dump_json(indent=1)
    assert detail in found.detail and remedy in found.remedy
    assert not hv01.ok and not report.ok
    assert next(h for h in report.hosts if h.host == "hv02").ok  # the other host is fine


def test_no_rights_also_fails_the_hyperv_scripts_but_not_the_readiness(lab: Lab) -> None:
    _no_rights(lab)
    report = doctor.run(lab.config, ["hv01"])
    facts = _check(report, "hv01", "script Get-HostFacts")
    assert facts.status == "fail" and "required permission" in facts.detail
    assert _check(report, "hv01", "script Get-HostReadiness").status == "pass"
    assert _check(report, "hv01", "winrm quotas").status == "warn"  # unreadable without admin


def test_wrong_certificate_name_fails_tls_with_the_names_it_carries(tmp_path: Path) -> None:
    def populate(estate) -> None:
        estate.host("hv02").tls_name = "hv02.wrong.example"
        add_vm(estate, "hv01", "web01")

    lab = make_lab(tmp_path, https=True, populate=populate)
    try:
        write_config(tmp_path)  # hv02 is trusted through its own certificate: only the name is off
        report = doctor.run(load(tmp_path / "hvmove.yaml"))
        tls = _check(report, "hv02", "tls")
        assert tls.status == "fail"
        assert "DNS:hv02.wrong.example" in tls.detail
        assert "subject alternative names" in tls.remedy and "127.0.0.1" in tls.remedy
        assert [c.name for c in report.hosts[1].checks] == ["reachable", "tls"]
        assert report.hosts[0].ok  # hv01 keeps the lab certificate
    finally:
        lab.server.stop()


def test_cli_exit_codes_and_json(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from hvmove.cli import app

    monkeypatch.chdir(lab.dir)
    ok = CliRunner().invoke(app, ["doctor", "--json", "--host", "hv02"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.output)
    assert doc["ok"] is True and [h["host"] for h in doc["hosts"]] == ["hv02"]
    _no_delegation(lab)
    bad = CliRunner().invoke(app, ["doctor", "--host", "hv01"])
    assert bad.exit_code == 1 and "hv01: NOT ready" in bad.output
    md = CliRunner().invoke(app, ["doctor", "--host", "hv01", "--markdown"])
    assert md.exit_code == 1 and "## hv01 (127.0.0.1:" in md.output
    assert "| share \\\\fs01\\vmstore | fail | access denied" in md.output
    bad_json = CliRunner().invoke(app, ["doctor", "--host", "hv01", "--json"])
    assert bad_json.exit_code == 1
    failed = [c for c in json.loads(bad_json.output)["hosts"][0]["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["share \\\\fs01\\vmstore"]
    assert "cifs" in failed[0]["remedy"]


def test_a_failed_check_must_carry_a_remedy() -> None:
    from hvmove.doctor.report import HostReport

    report = HostReport(host="hv01", address="127.0.0.1:5986")
    with pytest.raises(ValueError, match="without a remedy"):
        report.add("rights", "fail", "no rights")
    report.add("rights", "warn", "odd")  # a warning may go without one


def test_unreachable_host_and_rejected_password(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    lab.server.endpoint.kill_host("hv02")
    monkeypatch.setenv("HVMOVE_LAB_PASSWORD", "not-the-password")
    report = doctor.run(lab.config)
    hv01, hv02 = report.hosts
    assert [(c.name, c.status) for c in hv02.checks] == [("reachable", "fail")]
    assert "WinRM listener" in hv02.checks[0].remedy
    logon = _check(report, "hv01", "logon")
    assert logon.status == "fail" and "refused" in logon.detail
    assert "winrm/config/service/auth" in logon.remedy
    assert [c.name for c in hv01.checks][-1] == "logon"  # nothing else is tried without a session


def test_cluster_nodes_csvs_and_owner_nodes(tmp_path: Path) -> None:
    from hvmove.lab.estate import LabVolume

    def populate(estate) -> None:
        for h in estate.data.hosts:
            h.cluster_name = "CL1"
        estate.data.volumes.append(
            LabVolume(
                root="C:\\ClusterStorage\\Volume1\\",
                dir="shared/csv1",
                kind="csv",
                hosts=["hv01", "hv02"],
                capacity=2**40,
                label="Volume1",
            )
        )
        add_vm(estate, "hv01", "web01")
        add_vm(estate, "hv02", "sql01")
        add_vm(estate, "hv02", "app01", state="Off")

    lab = make_lab(tmp_path, populate=populate)
    try:
        report = doctor.run(lab.config, ["hv01"])
        assert report.ok, report.markdown()
        assert _check(report, "hv01", "cluster").detail == "cluster CL1: nodes HV01, HV02"
        storage = _check(report, "hv01", "cluster storage").detail
        assert storage == (
            "CSVs: C:\\ClusterStorage\\Volume1 (owner HV01); VM roles by owner node: HV01 1, HV02 2"
        )
        # a node missing from hvmove.yaml: cleanup on a CSV could not ask it
        config = lab.config.model_copy(update={"hosts": lab.config.hosts[:1]})
        missing = _check(doctor.run(config), "hv01", "cluster")
        assert missing.status == "warn" and "not in hvmove.yaml: HV02" in missing.detail
    finally:
        lab.server.stop()


def test_shares_used_by_vms_are_checked_too() -> None:
    from hvmove.doctor.checks import _share_root

    assert _share_root("\\\\fs01\\vmstore\\web01\\disk.vhdx") == "\\\\fs01\\vmstore"
    assert _share_root("\\\\fs01") is None
    assert _share_root("D:\\VMs\\web01") is None


def test_a_share_a_vm_uses_is_checked_without_being_configured(tmp_path: Path) -> None:
    def populate(estate) -> None:
        add_vm(estate, "hv01", "vdi01", root="\\\\fs01\\vmstore\\VMs")
        estate.host("hv01").smb_delegation = False

    lab = make_lab(tmp_path, populate=populate)
    try:
        config = lab.config.model_copy(
            update={"hosts": [h.model_copy(update={"shares": []}) for h in lab.config.hosts]}
        )
        share = _check(doctor.run(config, ["hv01"]), "hv01", "share \\\\fs01\\vmstore")
        assert share.status == "fail" and "double hop" in share.detail
    finally:
        lab.server.stop()
