"""The lab as a new user meets it: `hvmove lab up`, `hvmove inventory --json`, `hvmove lab down`,
each a separate process; a restart of the lab is a host reboot that keeps the estate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def hvmove(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HVMOVE_LAB_PASSWORD"}
    return subprocess.run(
        [sys.executable, "-m", "hvmove.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lab_up_inventory_down(tmp_path: Path) -> None:
    up = hvmove("lab", "up", "--hosts", "2", "--vms", "5", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert (tmp_path / "hvmove.yaml").exists() and (tmp_path / ".env").exists()
        config = (tmp_path / "hvmove.yaml").read_text()
        assert "transport: https" in config and "ca_file:" in config  # TLS validated by default
        password = (tmp_path / ".env").read_text().split("=", 1)[1].strip()
        assert password not in config  # only the reference is in the config
        inv = hvmove("inventory", "--json", cwd=tmp_path)
        assert inv.returncode == 0, inv.stderr
        hosts = json.loads(inv.stdout)["hosts"]
        assert [h["name"] for h in hosts] == ["hv01", "hv02"]
        assert sum(len(h["vms"]) for h in hosts) == 5
        assert all(
            {"C:\\", "D:\\", "E:\\", "F:\\"} <= {v["volume"] for v in h["volumes"]} for h in hosts
        )
        vm = hosts[0]["vms"][0]
        assert {"id", "name", "state", "drives", "checkpoints", "dvd_paths"} <= set(vm)
        assert vm["drives"][0]["chain"][0]["disk_identifier"]
        # a second `lab up` finds it running; `lab down` then `lab up` is a reboot
        assert hvmove("lab", "up", cwd=tmp_path).returncode == 0
        assert hvmove("lab", "down", cwd=tmp_path).returncode == 0
        gone = hvmove("inventory", cwd=tmp_path)
        assert gone.returncode == 1 and "cannot connect" in gone.stderr
        assert "Traceback" not in gone.stderr
        assert hvmove("lab", "up", cwd=tmp_path).returncode == 0
        again = json.loads(hvmove("inventory", "--json", cwd=tmp_path).stdout)["hosts"]
        assert [v["id"] for v in again[0]["vms"]] == [v["id"] for v in hosts[0]["vms"]]
    finally:
        hvmove("lab", "down", cwd=tmp_path)


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    missing = hvmove("inventory", cwd=tmp_path)
    assert missing.returncode == 1
    assert "config file not found; run 'hvmove lab up'" in missing.stderr
    (tmp_path / "hvmove.yaml").write_text("hosts:\n  - name: hv01\n    address: x\n")
    bad = hvmove("inventory", cwd=tmp_path)
    assert bad.returncode == 1 and "hosts[0] (hv01).username: required key is missing" in bad.stderr
    assert "Traceback" not in bad.stderr
