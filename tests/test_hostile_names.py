"""Any VM name Hyper-V accepts, and any path Windows allows, work end to end: plan validation,
prechecks, the move itself, Prefect artifact keys and event ids, and the CLI's output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.client.schemas.actions import ArtifactCreate
from typer.testing import CliRunner

from hvmove import names, pipeline, prechecks
from hvmove.models import MoveRequest
from hvmove.paths import RESERVED_CHARACTERS, path_problem
from hvmove.plans import request_problem
from hvmove.store import Store
from tests.conftest import GiB, make_lab

# what the issue lists, plus letters from other scripts
HOSTILE = "aZ09 -_.'\"$`[]{}();,&%!@#~^+=üößÉçØłЖжΩ中文日本語\u00a0"
# the same, minus what Windows forbids in a file name
LEGAL_IN_PATHS = "".join(c for c in HOSTILE if c not in RESERVED_CHARACTERS)

vm_names = st.text(alphabet=HOSTILE, min_size=1, max_size=40)
components = (
    st.text(alphabet=LEGAL_IN_PATHS, min_size=1, max_size=30)
    .map(lambda s: s.strip(" .") or "x")
    .filter(lambda s: path_problem(f"E:\\{s}") == "")
)


@given(host=vm_names, vm=vm_names)
def test_artifact_keys_and_resource_ids_are_what_prefect_accepts(host: str, vm: str) -> None:
    key = names.artifact_key("prechecks", host, vm)
    ArtifactCreate(key=key, type="table", data=[])  # Prefect's own validation
    assert len(key) <= names.MAX_KEY
    rid = names.resource_id(host, vm)
    # automations match 'hvmove.vm.*': exactly two dot-free parts after the prefix
    assert re.fullmatch(r"hvmove\.vm\.[a-z0-9-]+\.[a-z0-9-]+", rid), rid


@given(host=vm_names, a=vm_names, b=vm_names)
def test_different_vms_never_share_a_key(host: str, a: str, b: str) -> None:
    if a.casefold() != b.casefold():
        assert names.artifact_key("move-report", host, a) != names.artifact_key(
            "move-report", host, b
        )
        assert names.resource_id(host, a) != names.resource_id(host, b)


def test_plain_names_keep_their_readable_keys() -> None:
    assert names.artifact_key("prechecks", "hv01", "web01") == "prechecks-web01-hv01"
    assert names.artifact_key("prechecks", "HV01", "Büro-DC01").startswith(
        "prechecks-buro-dc01-hv01-"
    )
    vm_id = "99C4AF91-F859-5522-86FE-4661D2A21E97"
    assert names.resource_id("hv01", "x", vm_id) == f"hvmove.vm.hv01.{vm_id.lower()}"
    assert names.display("web\n01") == "web\\x0a01"


@given(parts=st.lists(components, min_size=1, max_size=4), vm=vm_names)
def test_plan_validation_accepts_every_legal_path(parts: list[str], vm: str) -> None:
    dest = "E:\\" + "\\".join(parts)
    request = MoveRequest(host="hv01", vm=vm, destination=dest)
    assert request_problem(request) == ""


@given(
    head=components,
    bad=st.sampled_from([*RESERVED_CHARACTERS, "\n", "\x00", "\x1f"]),
    tail=components,
)
def test_plan_validation_refuses_each_reserved_character_in_one_line(
    head: str, bad: str, tail: str
) -> None:
    request = MoveRequest(host="hv01", vm="web01", destination=f"E:\\{head}{bad}{tail}")
    problem = request_problem(request)
    assert problem.startswith("destination: ")
    assert "\n" not in problem and "\x00" not in problem


HOSTILE_VMS = ["Büro-DC01", "web [prod]", "o'brien $x `y`", "a;b (c) {d}", "[bold]x[/bold]"]


def _populate(estate) -> None:
    from hvmove.lab.build import add_vm

    for name in HOSTILE_VMS:
        add_vm(estate, "hv01", name, disks=[(4 * GiB, 0.5, "Dynamic")])


@pytest.fixture(scope="module")
def hostile_lab(tmp_path_factory: pytest.TempPathFactory):
    lab = make_lab(tmp_path_factory.mktemp("hostile"), populate=_populate)
    yield lab
    lab.server.stop()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(vm=st.sampled_from(HOSTILE_VMS), folder=components)
def test_prechecks_take_any_name_and_any_legal_destination(hostile_lab, vm: str, folder: str):
    request = MoveRequest(host="hv01", vm=vm, destination=f"E:\\{folder}\\{vm}")
    assert request_problem(request) == ""
    with hostile_lab.client() as client:
        report = prechecks.run(client, request, prechecks.Options(probe=False)).report
    assert report.ok, report.reason()
    assert report.vm == vm


def test_a_hostile_name_moves_end_to_end(hostile_lab, tmp_path: Path) -> None:
    vm = "o'brien $x `y`"
    request = MoveRequest(host="hv01", vm=vm, destination=f"E:\\VMs [prod]\\$(x);\\{vm}")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    info = hostile_lab.vm(vm)
    move_id = store.open_move(
        host="hv01", vm_id=info.id, vm_name=vm, request=request.model_dump(mode="json")
    ).id
    opts = prechecks.Options(probe=False)
    with hostile_lab.client() as client:
        pipeline.run_prechecks(client, store, move_id, request, opts)
        pipeline.run_copy(client, store, move_id, request, poll_s=0.02)
        pipeline.run_cutover(client, store, move_id, request)
        pipeline.run_verify(client, store, move_id)
        pipeline.run_cleanup(client, store, move_id)
        moved = client.inventory(info.id).vms[0]
    assert store.get(move_id).source_removed
    assert moved.configuration_location == f"E:\\VMs [prod]\\$(x);\\{vm}"


def test_cli_shows_names_and_paths_exactly(hostile_lab) -> None:
    from hvmove.cli import app

    config = str(hostile_lab.dir / "hvmove.yaml")
    inventory = CliRunner().invoke(app, ["inventory", "--config", config])
    assert inventory.exit_code == 0, inventory.output
    for vm in HOSTILE_VMS:
        assert vm in inventory.output, vm
    plan = hostile_lab.dir / "hostile-plan.yaml"
    plan.write_text(
        "moves:\n"
        + "".join(
            f"  - {{host: hv01, vm: '{vm.replace(chr(39), chr(39) * 2)}', "
            f"destination: 'E:\\[x] {i}\\{vm.replace(chr(39), chr(39) * 2)}'}}\n"
            for i, vm in enumerate(HOSTILE_VMS)
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["precheck", str(plan), "--config", config])
    assert result.exit_code == 0, result.output
    flat = result.output.replace("\n", "")
    for i, vm in enumerate(HOSTILE_VMS):
        assert vm in result.output, vm
        assert f"[x] {i}" in flat
    night = CliRunner().invoke(app, ["plan", str(plan), "--config", config, "--window", "now"])
    assert night.exit_code == 0, night.output
    for vm in HOSTILE_VMS:
        assert vm in night.output, vm
    # an error names the VM as written, too
    bad = hostile_lab.dir / "bad-plan.yaml"
    bad.write_text("moves:\n  - {host: hv01, vm: 'ghost [prod]', destination: 'E:\\x'}\n")
    refused = CliRunner().invoke(app, ["precheck", str(bad), "--config", config])
    assert refused.exit_code == 1 and "no VM 'ghost [prod]'" in refused.output


# what the CLI renders: no character of a name may be read as Rich markup or dropped
printable = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\u00ad"
    ),
    min_size=1,
    max_size=24,
).filter(lambda s: s.strip() == s and "  " not in s)


@settings(max_examples=60, deadline=None)
@given(vm=printable, host=printable, dest=components, detail=printable)
def test_cli_tables_print_any_text_exactly(vm: str, host: str, dest: str, detail: str) -> None:
    from hvmove.cli import render
    from hvmove.models import Check, PrecheckReport

    report = PrecheckReport(host=host, vm=vm, mode="all", destination=f"E:\\{dest}")
    report.checks.append(Check(name="vm state", status="fail", detail=detail, remedy=f"[{vm}]"))
    with render.out.capture() as captured:
        render.print_checks(report)
        render.print_precheck_summary([report])
    text = captured.get()
    for value in (vm, host, detail, f"[{vm}]"):
        assert value in text, (value, text)
