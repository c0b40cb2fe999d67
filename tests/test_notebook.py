"""CI runs the capacity notebook top to bottom on generated history and checks what it produced:
the forecast table, and a rebalancing plan that parses and names only VMs and hosts that exist."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from hvmove import analysis
from hvmove.lab.history import generate_history
from hvmove.store import Store

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "capacity_analysis.ipynb"


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    return cells[0]


def test_capacity_notebook_runs_and_proposes_a_valid_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    generate_history(url, days=60, seed=7)
    plan_path = tmp_path / "plan.yaml"
    # the kernel inherits this process's environment
    monkeypatch.setenv("HVMOVE_STORE_URL", url)
    monkeypatch.setenv("HVMOVE_PLAN_OUT", str(plan_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # raises CellExecutionError, with the traceback, if any cell fails

    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors

    table = tagged(nb, "forecast-table")
    results = [o for o in table.outputs if o.output_type == "execute_result"]
    assert results, "the forecast cell shows no table"
    html = results[-1].data["text/html"]
    header = html.split("</thead>")[0]
    assert "volume" in header and "crossing_date" in header
    body = html.split("<tbody>")[1]
    assert body.count("<tr>") >= 1  # one row per volume
    assert "above" in body  # the generated history has a full volume

    pictures = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(pictures) >= 4  # fill, throughput, ETA, rebalancing

    plan = analysis.read_plan(plan_path)
    assert len(plan.moves) >= 1
    vms = analysis.latest(analysis.vm_growth(Store(url)))
    known = set(zip(vms["host"], vms["vm_name"], strict=True))
    for move in plan.moves:
        assert (move.host, move.vm) in known
        assert move.mode == "all" and move.destination
        assert move.destination.lower().endswith("\\vms\\" + move.vm.lower())
