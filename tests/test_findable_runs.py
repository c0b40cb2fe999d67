"""Runs an operator can find on a real Prefect server: a night named after its date, window and
move count, tagged with its batch; each move tagged host:/vm:/batch: (a hostile VM name included)
so the UI's tag filter finds them; the night's report links each move to its run, next to a
sortable results table and an 'N of M moves finished' progress artifact; each move's five task
runs form a chain in the run graph; an inventory run carries its date."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import GiB, make_lab

pytestmark = pytest.mark.slow

ODD = "Büro [x] 'q'"


def _populate(estate) -> None:
    from hvmove.lab.build import add_vm

    add_vm(estate, "hv01", "web01", disks=[(20 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv01", ODD, disks=[(10 * GiB, 0.5, "Dynamic")])


def test_night_and_moves_are_findable(prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    from flows.inventory import inventory_snapshot
    from flows.nightly import nightly

    lab = make_lab(tmp_path, populate=_populate)
    try:
        plan = lab.dir / "plan.yaml"
        plan.write_text(
            yaml.safe_dump(
                {
                    "moves": [
                        {"host": "hv01", "vm": vm, "destination": f"E:\\VMs\\{i}"}
                        for i, vm in enumerate(["web01", ODD])
                    ]
                }
            )
        )
        state = nightly(
            plan=str(plan),
            config=str(lab.dir / "hvmove.yaml"),
            window="now",
            poll_seconds=0.3,
            batch_id="night-test-1",
            return_state=True,
        )
        assert state.is_completed(), state
        inventory = inventory_snapshot(config=str(lab.dir / "hvmove.yaml"), return_state=True)
    finally:
        lab.server.stop()
    with get_client(sync_client=True) as client:
        night = client.read_flow_run(state.state_details.flow_run_id)
        # 'now' is a 24 h window: its last day is named too
        name = r"night \d{4}-\d\d-\d\d \d\d:\d\d-\d\d-\d\d \d\d:\d\d \(2 moves\)"
        assert re.fullmatch(name, night.name), night.name
        assert "batch:night-test-1" in night.tags
        moves = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["host:hv01", "batch:night-test-1"])
            )
        )
        by_vm = {next(t for t in r.tags if t.startswith("vm:")): r for r in moves}
        assert set(by_vm) == {"vm:web01", f"vm:{ODD}"}
        inv = client.read_flow_run(inventory.state_details.flow_run_id)
        assert re.fullmatch(r"inventory \d{4}-\d\d-\d\d \d\d:\d\d UTC", inv.name), inv.name
        # the run graph: each step waits for the one before
        tasks = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[by_vm["vm:web01"].id])
            )
        )
        step = {t.name.split("-")[0]: t for t in tasks}
        chain = ["prechecks", "copy", "cutover", "verify", "cleanup"]
        for before, after in itertools.pairwise(chain):
            # an edge from the step before, and no other (the graph is a chain, not a fan)
            edges = {str(i.id) for ins in step[after].task_inputs.values() for i in ins}
            assert edges == {str(step[before].id)}, (after, step[after].task_inputs)
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[night.id]))
        )
    by_key = {a.key: a for a in arts}
    report = by_key["nightly-report"].data
    for r in moves:  # each move links to its flow run's page
        assert f"/runs/flow-run/{r.id})" in report
    assert "[B\u00fcro \\[x\\] 'q']" in report  # the name as written, not a broken link
    table = by_key["nightly-results"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {r["vm"] for r in rows} == {"web01", ODD}
    assert all(r["status"] == "completed" and r["verified"] and r["run"] for r in rows)
    assert set(rows[0]) >= {"GiB", "copy s", "MB/s", "source removed", "reason"}
    progress = by_key["nightly-progress"]
    assert float(progress.data) == 100.0 and progress.description == "2 of 2 moves finished"
