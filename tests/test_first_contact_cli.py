"""The README's first contact, as a user runs it: `hvmove lab up`, `hvmove doctor`, `hvmove canary`,
each its own process; then a lab host with broken prerequisites makes doctor fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_lab import hvmove

pytestmark = pytest.mark.slow


def test_doctor_then_canary_on_a_fresh_lab_then_broken_hosts(tmp_path: Path) -> None:
    up = hvmove("lab", "up", "--hosts", "2", "--vms", "4", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "hosts").rglob("*"))
        doctor = hvmove("doctor", cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "hv01: ready" in doctor.stdout and "hv02: ready" in doctor.stdout
        canary = hvmove(
            "canary",
            "--host",
            "hv01",
            "--path",
            "D:\\VMs",
            "--to",
            "E:\\",
            "--out",
            "reports",
            cwd=tmp_path,
        )
        assert canary.returncode == 0, canary.stdout + canary.stderr
        (report,) = (tmp_path / "reports").glob("hvmove-canary-*.json")
        doc = json.loads(report.read_text())
        assert doc["ok"] and doc["left_behind"] == []
        # every premise the canary probes reaches the JSON report, each with what it would cost
        names = {p["name"] for p in doc["premises"] if p["impact"]}
        assert len(names) == len(doc["premises"]) == 10, names
        assert "a parent no drive attaches moved with its child (mode all)" in names
        assert report.with_suffix(".md").exists()
        after = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "hosts").rglob("*"))
        assert after == before
        assert hvmove("lab", "down", cwd=tmp_path).returncode == 0
        estate = json.loads((tmp_path / "estate.json").read_text())
        estate["hosts"][0]["smb_delegation"] = False
        estate["hosts"][0]["winrm_max_shells_per_user"] = 2
        estate["hosts"][1]["tls_name"] = "hv02.wrong.example"
        (tmp_path / "estate.json").write_text(json.dumps(estate))
        assert hvmove("lab", "up", cwd=tmp_path).returncode == 0
        broken = hvmove("doctor", "--json", cwd=tmp_path)
        assert broken.returncode == 1
        failed = {
            (h["host"], c["name"]): c["remedy"]
            for h in json.loads(broken.stdout)["hosts"]
            for c in h["checks"]
            if c["status"] == "fail"
        }
        assert set(failed) == {
            ("hv01", "share \\\\fs01\\vmstore"),
            ("hv01", "winrm quotas"),
            ("hv02", "tls"),
        }
        assert "cifs" in failed[("hv01", "share \\\\fs01\\vmstore")]
        assert "subject alternative names" in failed[("hv02", "tls")]
    finally:
        hvmove("lab", "down", cwd=tmp_path)


def test_lab_up_with_a_host_without_rights(tmp_path: Path) -> None:
    """A deliberate fault is not a failed `lab up`: the host answers, with a refusal."""
    assert hvmove("lab", "up", "--hosts", "1", "--vms", "1", cwd=tmp_path).returncode == 0
    try:
        assert hvmove("lab", "down", cwd=tmp_path).returncode == 0
        estate = json.loads((tmp_path / "estate.json").read_text())
        estate["hosts"][0]["rights"] = "none"
        (tmp_path / "estate.json").write_text(json.dumps(estate))
        up = hvmove("lab", "up", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        doctor = hvmove("doctor", "--json", cwd=tmp_path)
        assert doctor.returncode == 1
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["hosts"][0]["checks"]}
        assert checks["rights"]["status"] == "fail"
        assert "Hyper-V Administrators" in checks["rights"]["remedy"]
    finally:
        hvmove("lab", "down", cwd=tmp_path)
