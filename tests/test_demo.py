"""The README's first command, as a new user runs it: `hvmove demo` against the session's
Prefect server. Its night is findable in the UI: move runs tagged by host, a report linking each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_the_plan_as_a_night_that_links_to_its_moves(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    done = subprocess.run(
        [sys.executable, "-m", "hvmove.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ok"] is True
    status = {m["vm"]: m["status"] for m in result["moves"]}
    assert status == {
        "web01": "completed",
        "sql01": "completed",
        "app01": "completed",
        "iso01": "blocked",
        "file01": "completed",
        "build01": "completed",
        "bigdata01": "blocked",
    }
    # bigdata01 does not fit F: even alone: blocked like iso01, not deferred every night
    assert result["night"].startswith("Completed with 2 blocked")
    with get_client(sync_client=True) as client:
        on_hv02 = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["host:hv02"]))
        )
        assert {r.name.split()[1] for r in on_hv02} >= {"file01", "build01"}
        report = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-report"]))
        )[0]
    for run in on_hv02:
        if run.name.split()[1] in ("file01", "build01"):
            assert f"/runs/flow-run/{run.id}" in report.data
