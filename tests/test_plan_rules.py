"""A plan's paths follow Windows naming rules, and a bad plan stops `precheck`, `plan` and
`migrate` alike with one line, before Prefect, the store or a host is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmove.errors import ConfigError
from hvmove.plans import load_plan
from tests.conftest import Lab

WEB01_DISK = "D:\\VMs\\web01\\Virtual Hard Disks\\web01.vhdx"

BAD_PLANS = [
    ("destination: 'E:\\VMs\\..\\Windows'", "destination: 'E:\\VMs\\..\\Windows' contains a '..'"),
    ("destination: 'E:\\VMs\\CON'", "reserved device name CON"),
    ("destination: 'E:\\VMs\\lpt1.vhdx'", "reserved device name LPT1"),
    ('destination: "E:\\\\VMs\\\\web\\n01"', "control character \\n"),
    ('destination: "E:\\\\VMs\\\\web\\x0001"', "control character \\0"),
    ("destination: 'E:\\VMs\\web01.'", "ends with a period"),
    ("destination: 'E:\\VMs\\web01 '", "ends with a space"),
    ("destination: 'E:\\VMs\\a:b'", "':', a character Windows reserves"),
    ("destination: 'E:\\" + "\\".join(["x" * 50] * 6) + "'", "Windows paths hold at most 259"),
    (
        f"mode: vhds, vhds: [{{source: '{WEB01_DISK}', destination: '{WEB01_DISK}'}}]",
        "destination equals source",
    ),
    (
        f"mode: vhds, vhds: [{{source: '{WEB01_DISK}', destination: 'E:\\AUX\\web01.vhdx'}}]",
        "vhds[0].destination: 'E:\\AUX\\web01.vhdx': 'AUX' is the reserved device name AUX",
    ),
]


def write_plan(dir: Path, entry: str) -> Path:
    path = dir / "plan.yaml"
    path.write_text(f"moves:\n  - {{host: hv01, vm: web01, {entry}}}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("entry", "expected"), BAD_PLANS)
def test_plan_paths_follow_windows_naming_rules(tmp_path: Path, entry: str, expected: str) -> None:
    path = write_plan(tmp_path, entry)
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(f"{path}: moves[0] (web01@hv01): "), message
    assert expected in message, message
    assert "\n" not in message and "\x00" not in message


@pytest.mark.parametrize("command", ["precheck", "plan", "migrate"])
@pytest.mark.parametrize(
    ("entry", "expected"),
    [BAD_PLANS[1], BAD_PLANS[3], BAD_PLANS[9]],
    ids=["reserved", "newline", "same-disk"],
)
def test_every_command_refuses_a_bad_plan_before_anything_starts(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, entry: str,
    expected: str,
) -> None:  # fmt: skip
    from hvmove.cli import app, moves
    from hvmove.store import Store

    started: list[str] = []

    def no_prefect() -> str:
        started.append("prefect")
        raise AssertionError("Prefect was started for a bad plan")

    monkeypatch.setattr(moves, "prefect_api", no_prefect)
    plan = write_plan(tmp_path, entry)
    result = CliRunner().invoke(app, [command, str(plan), "--config", str(lab.dir / "hvmove.yaml")])
    assert result.exit_code == 1, result.output
    assert expected in result.output.replace("\n", " ") or expected in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert not started
    assert not [c for c in lab.server.scripts.calls if c[1] == "Start-StorageMove"]
    assert Store(lab.config.store_url()).moves() == []
