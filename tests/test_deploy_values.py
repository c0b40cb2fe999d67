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
