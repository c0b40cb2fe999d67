"""No value is ever pasted into PowerShell text: the only script the client sends is a project
file's unchanged text, and values travel as parameters."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("hvmove", "flows", "tasks") for p in (ROOT / d).rglob("*.py")]


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == name
            ):
                found.append((path, node))
    return found


def test_scripts_are_sent_only_as_project_files() -> None:
    scripts = calls("add_script")
    assert scripts, "the client must send scripts with add_script"
    for path, call in scripts:
        arg = call.args[0]
        # exactly script_text(<name>): the file's text, never an f-string or a concatenation
        assert isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "script_text", (
            f"{path.relative_to(ROOT)}:{call.lineno} sends something other than a script file"
        )
    for forbidden in ("add_cmdlet", "execute_ps", "execute_cmd"):
        assert not calls(forbidden), f"{forbidden} bypasses the scripts and their parameters"


def test_only_the_host_layer_touches_pypsrp() -> None:
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        if "pypsrp" in text and not rel.startswith("hvmove/hyperv/"):
            # the lab is the other side of the wire: it serves pypsrp, it does not import it
            assert "import pypsrp" not in text and "from pypsrp" not in text, rel


def test_the_library_does_not_import_prefect() -> None:
    # the front door (the CLI package) and the secret resolver
    allowed = {"hvmove/credentials.py"}
    for path in (ROOT / "hvmove").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            if any(
                n == "prefect"
                or n.startswith("prefect.")
                or n.startswith("flows")
                or n.startswith("tasks")
                for n in names
            ):
                assert rel in allowed or rel.startswith("hvmove/cli/"), f"{rel} imports {names}"
