"""Flows stay thin: they never open a host client themselves (issue 12). The library opens them
(hvmove.session for a move, HostClients for a flow visiting several hosts) and tasks use them;
a flow that opened its own would hold credentials and a WinRM pool outside the code that
closes them on every path."""

from __future__ import annotations

import ast
from pathlib import Path

FLOWS = Path(__file__).resolve().parent.parent / "flows"
OPENERS = {"open_client", "HostClient"}  # HostClient(...) is the other way to open one


def _opens_a_client(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "hvmove.hyperv.client":
            found += [f"imports {a.name}" for a in node.names if a.name == "open_client"]
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in OPENERS:
                found.append(f"calls {name}() at line {node.lineno}")
    return found


def test_no_flow_opens_a_host_client() -> None:
    flows = sorted(FLOWS.glob("*.py"))
    assert flows
    offenders = {
        p.name: found
        for p in flows
        if (found := _opens_a_client(ast.parse(p.read_text(encoding="utf-8"))))
    }
    assert not offenders, offenders
