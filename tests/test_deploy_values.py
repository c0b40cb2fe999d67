"""`hvmove deploy` gives Prefect every variable deployments/prefect.yaml names. Prefect stores a
`{{ $VAR }}` it cannot fill at deploy time as a template, and the worker then fills it from its
own environment at run time (an empty string on a worker without it): see
tests/test_deployment_edges.py, which shows both on a real server and worker."""

from __future__ import annotations

import re
from pathlib import Path

from hvmove.cli.deploy import PROJECT, deploy_values
from tests.conftest import Lab

PREFECT_YAML = PROJECT / "deployments" / "prefect.yaml"


def test_every_template_in_prefect_yaml_is_a_deploy_value(lab: Lab, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
    text = PREFECT_YAML.read_text(encoding="utf-8")
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # not the comments
    named = set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", body))
    values = deploy_values(lab.dir / "hvmove.yaml", plan, PROJECT)
    assert named, "the yaml has no deploy-time variables: this test no longer looks at it"
    assert named <= set(values), f"not given by hvmove deploy: {sorted(named - set(values))}"
    assert all(values[name] for name in named)  # an empty value would be stored empty
    # nothing else is templated: no {{ prefect.variables }} or step outputs for a worker to fill
    assert set(re.findall(r"\{\{\s*([^}]*?)\s*\}\}", body)) == {f"${n}" for n in named}


def test_the_night_is_scheduled_ahead_of_its_window_on_the_configs_clock(
    lab: Lab, tmp_path: Path
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from hvmove.batch import parse_window

    plan = tmp_path / "plan.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: web01, destination: 'F:\\VMs\\web01'}\n")
    config = lab.dir / "hvmove.yaml"
    base = config.read_text(encoding="utf-8")

    def cron(defaults: str) -> str:
        config.write_text(base + f"defaults:\n{defaults}", encoding="utf-8")
        return deploy_values(config, plan, PROJECT)["HVMOVE_NIGHT_CRON"]

    assert cron("  window: '22:00-05:00'\n") == "50 21 * * *"  # 10 minutes ahead by default
    assert cron("  window: '00:05-04:00'\n  start_ahead_minutes: 30\n") == "35 23 * * *"
    assert cron("  window: '22:00-05:00'\n  start_ahead_minutes: 0\n") == "0 22 * * *"
    # a night started at 21:50 plans the window that opens at 22:00 that evening, not a past one
    berlin = ZoneInfo("Europe/Berlin")
    win = parse_window("22:00-05:00", datetime(2026, 3, 28, 21, 50, tzinfo=berlin), "Europe/Berlin")
    assert win.start == datetime(2026, 3, 28, 22, 0, tzinfo=berlin)
