"""Issue 12's house rule, kept by a test: no module over 600 lines and no function over 80,
outside the tests and the lab's WinRM protocol code (whose message handlers follow the spec)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("hvmove", "flows", "tasks", "benchmarks", "tools", "deployments")
EXEMPT = ("hvmove/lab/wsman/",)
MAX_MODULE, MAX_FUNCTION = 600, 80


def _sources() -> list[Path]:
    files = [p for d in SOURCES for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if not p.relative_to(ROOT).as_posix().startswith(EXEMPT)]


def oversized(name: str, text: str) -> list[str]:
    found = [f"{name}: {text.count(chr(10))} lines"] if text.count("\n") > MAX_MODULE else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_module_over_600_lines_and_no_function_over_80() -> None:
    assert len(_sources()) > 100  # the walk found the project
    problems = [
        p
        for path in _sources()
        for p in oversized(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    ]
    assert problems == [], "split along its seams:\n" + "\n".join(problems)


def test_the_rule_sees_a_long_function_and_a_long_module() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    assert oversized("a.py", f"def too_long():\n{body}\n") == [
        f"a.py:1 too_long: {MAX_FUNCTION + 1} lines"
    ]
    assert oversized("b.py", "x = 1\n" * (MAX_MODULE + 1)) == [f"b.py: {MAX_MODULE + 1} lines"]
    assert oversized("c.py", "x = 1\n" * MAX_MODULE) == []
