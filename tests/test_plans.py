"""Bad plans get one clear line naming the entry, and nothing starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove.errors import ConfigError
from hvmove.plans import load_plan, resolve
from tests.conftest import Lab


def check(lab: Lab, text: str) -> None:
    path = lab.dir / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    plan = load_plan(path)
    with lab.client("hv01") as c1, lab.client("hv02") as c2:
        inventories = {"hv01": c1.inventory().vms, "hv02": c2.inventory().vms}
    resolve(plan, lab.config, inventories, path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("moves: [", "not valid YAML: line 1"),
        ("[]", "expected a mapping with a 'moves:' list"),
        ("moves: []", "moves: List should have at least 1 item"),
        ("moves:\n  - {vm: web01, destination: 'E:\\x'}\n", "moves[0] (web01@?).host: required"),
        (
            "moves:\n  - {host: hv01, vm: web01, mode: fast, destination: 'E:\\x'}\n",
            "moves[0] (web01@hv01).mode",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, colour: red, destination: 'E:\\x'}\n",
            "colour: unknown key",
        ),
        ("moves:\n  - {host: hv01, vm: web01}\n", "mode 'all' needs 'destination:'"),
        (
            "moves:\n  - {host: hv01, vm: web01, destination: 'VMs\\web01'}\n",
            "not an absolute Windows path",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, destination: 'E:\\bad|name'}\n",
            "contains '|', a character Windows reserves",
        ),
        (
            "moves:\n  - {host: hv09, vm: web01, destination: 'E:\\x'}\n",
            "moves[0] (web01@hv09): unknown host 'hv09' (hosts in the config: hv01, hv02)",
        ),
        (
            "moves:\n  - {host: hv01, vm: nope01, destination: 'E:\\x'}\n",
            "moves[0] (nope01@hv01): no VM 'nope01' on host hv01",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, destination: 'E:\\x'}\n"
            "  - {host: hv01, vm: WEB01, destination: 'F:\\x'}\n",
            "moves[1] (WEB01@hv01): VM web01 is already moved by moves[0]",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, destination: 'D:\\VMs\\web01'}\n",
            "is the VM's current location",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, mode: vhds, vhds: [{source: 'D:\\a.vhdx', "
            "destination: 'E:\\a.vhdx'}]}\n",
            "'D:\\a.vhdx' is not a disk of web01",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, mode: vhds, vhds: [{source: "
            "'D:\\VMs\\web01\\Virtual Hard Disks\\web01.vhdx', destination: 'E:\\other.vhdx'}]}\n",
            "must end in the source's file name",
        ),
        (
            "moves:\n  - {host: hv01, vm: web01, mode: vhds, destination: 'E:\\x'}\n",
            "does not take 'destination:'",
        ),
    ],
)
def test_bad_plan_is_one_line_naming_the_entry(lab: Lab, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check(lab, text)
    message = str(info.value)
    assert message.startswith(str(lab.dir / "plan.yaml")), message
    assert expected in message, message
    assert "\n" not in message


def test_good_plan_resolves_names_and_ids(lab: Lab) -> None:
    sql = lab.vm("sql01")
    text = (
        "moves:\n  - {host: HV01, vm: web01, destination: 'E:\\VMs\\web01'}\n"
        f"  - {{host: hv01, vm: '{sql.id}', mode: components, virtual_machine_path: "
        "'F:\\VMs\\sql01'}\n"
    )
    (lab.dir / "plan.yaml").write_text(text)
    plan = load_plan(lab.dir / "plan.yaml")
    with lab.client("hv01") as c:
        moves = resolve(plan, lab.config, {"hv01": c.inventory().vms}, "plan.yaml")
    assert [(m.request.host, m.vm.name) for m in moves] == [("hv01", "web01"), ("hv01", "sql01")]


def test_cli_bad_plan_exit_1_without_traceback(lab: Lab, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hvmove.cli import app

    plan = tmp_path / "p.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: ghost, destination: 'E:\\x'}\n")
    result = CliRunner().invoke(
        app, ["precheck", str(plan), "--config", str(lab.dir / "hvmove.yaml")]
    )
    assert result.exit_code == 1
    assert "no VM 'ghost' on host hv01" in result.output
    assert "Traceback" not in result.output
