"""Offline checks of the PowerShell scripts in hvmove/hyperv/scripts.

No Windows host or pwsh is needed: every script is parsed with tree-sitter-pwsh, and every command
it invokes is resolved against the documented cmdlets in tests/data/cmdlets.json (plus the
deliberate exceptions in tests/data/cmdlets-extra.json) with PowerShell's parameter binding rule:
an exact name or alias wins, otherwise the token must be a prefix of exactly one parameter.
The checker functions take script text, so the negative tests below prove they catch mistakes.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_pwsh
from pydantic import BaseModel

from hvmove.hyperv.catalog import SPECS, parse_param_names

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "hvmove" / "hyperv" / "scripts"
DATA = Path(__file__).resolve().parent / "data"
SERVER_VERSIONS = ("2016", "2019", "2022", "2025")  # the Hyper-V hosts the scripts must run on
PS7_NODES = {"null_coalesce_expression", "ternary_expression", "pipeline_chain_tail", "??="}


def script_files() -> list[Path]:
    return sorted(SCRIPTS.glob("*.ps1"))


# --- parsing ----------------------------------------------------------------------------------
@cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_pwsh.language()))


def parse(text: str) -> tree_sitter.Tree:
    return _parser().parse(text.encode("utf-8"))


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def _where(name: str, node: tree_sitter.Node) -> str:
    row, col = node.start_point
    return f"{name}:{row + 1}:{col + 1}"


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def syntax_errors(text: str, name: str = "<script>") -> list[str]:
    """'file:line:col ...' for every ERROR or MISSING node tree-sitter-pwsh produces."""
    root = parse(text).root_node
    found = []
    for node in walk(root):
        if node.is_missing:
            found.append(f"{_where(name, node)}: missing {node.type!r}")
        elif node.is_error:
            found.append(f"{_where(name, node)}: unexpected {_text(node)[:40]!r}")
    if root.has_error and not found:
        found.append(f"{name}: the parser reports an error it could not place")
    return found


def ps7_constructs(text: str, name: str = "<script>") -> list[str]:
    """Syntax that Windows PowerShell 5.1 does not have (??, ??=, ?:, && and ||)."""
    return [
        f"{_where(name, n)}: PowerShell 7 only: {_text(n)[:40]!r}"
        for n in walk(parse(text).root_node)
        if n.type in PS7_NODES
    ]


# --- the cmdlet table -------------------------------------------------------------------------
@cache
def table() -> dict:
    """cmdlets.json with cmdlets-extra.json merged over it."""
    data = json.loads((DATA / "cmdlets.json").read_text("utf-8"))
    extra_file = DATA / "cmdlets-extra.json"
    if extra_file.exists():
        extra = json.loads(extra_file.read_text("utf-8"))
        for name, entry in extra.get("cmdlets", {}).items():
            known = next((k for k in data["cmdlets"] if k.lower() == name.lower()), None)
            if known is None:
                data["cmdlets"][name] = {"common_parameters": True, "parameters": {}, **entry}
            else:
                merged = dict(data["cmdlets"][known])
                merged["parameters"] = {**merged["parameters"], **entry.get("parameters", {})}
                data["cmdlets"][known] = merged
    return data


def _lookup(mapping: dict, key: str) -> tuple[str, typing.Any] | None:
    for k, v in mapping.items():
        if k.lower() == key.lower():
            return k, v
    return None


def _cmdlet_entry(command: str) -> tuple[str, dict]:
    """(documented name, entry) of a cmdlet or command alias; ValueError when unknown."""
    t = table()
    alias = _lookup(t["aliases"], command)
    name = alias[1] if alias else command
    found = _lookup(t["cmdlets"], name)
    if found is None:
        if _lookup(t["other_documented_cmdlets"]["cmdlets"], name):
            raise ValueError(
                f"{command}: documented, but its parameters are not in the table "
                "(add it to cmdlets-extra.json with a reason)"
            )
        raise ValueError(f"{command}: not a documented cmdlet")
    return found


def _bind(param: str, names: dict[str, str], what: str) -> str:
    """PowerShell's rule: exact name or alias wins, else an unambiguous prefix."""
    if param.lower() in names:
        return names[param.lower()]
    hits = {canon for n, canon in names.items() if n.startswith(param.lower())}
    if len(hits) != 1:
        detail = "ambiguous: " + ", ".join(sorted(hits)) if hits else "no such parameter"
        raise ValueError(f"{what} -{param}: {detail}")
    return hits.pop()


def resolve(command: str, param: str) -> str:
    """Canonical parameter name of `command -param`, or ValueError as PowerShell 5.1 would."""
    name, entry = _cmdlet_entry(command)
    names: dict[str, str] = {}
    for p, info in entry["parameters"].items():
        for n in [p, *info.get("aliases", [])]:
            names.setdefault(n.lower(), p)
    if entry.get("common_parameters", True):
        for p, info in table()["common_parameters"].items():
            for n in [p, *info["aliases"]]:
                names.setdefault(n.lower(), p)
    return _bind(param, names, name)


def _supported_everywhere(versions: list[str] | None) -> bool:
    return versions is None or "5.1" in versions or all(v in versions for v in SERVER_VERSIONS)


def version_problem(command: str, canonical: str | None = None) -> str | None:
    """Why a cmdlet (or one of its parameters) is missing on some Windows Server 2016-2025 host."""
    name, entry = _cmdlet_entry(command)
    if not _supported_everywhere(entry.get("versions")):
        return f"{name}: documented only for {entry['versions']}"
    info = entry["parameters"].get(canonical or "", {})
    if canonical and not _supported_everywhere(info.get("versions")):
        return f"{name} -{canonical}: documented only for {info['versions']}"
    return None


# --- commands in a script ---------------------------------------------------------------------
def _functions(root: tree_sitter.Node) -> dict[str, set[str]]:
    """Functions defined in the script: lower-case name -> lower-case parameter names."""
    found: dict[str, set[str]] = {}
    for node in walk(root):
        if node.type != "function_statement":
            continue
        name = next((c for c in node.children if c.type == "function_name"), None)
        if name is None:
            continue
        params: set[str] = set()
        for sub in node.children:
            if sub.type in ("function_parameter_declaration", "script_block"):
                for part in walk(sub):
                    if part.type == "script_parameter":
                        var = next((c for c in part.children if c.type == "variable"), None)
                        if var is not None:
                            params.add(_text(var).lstrip("$").lower())
        found[_text(name).lower()] = params
    return found


def _command_name(command: tree_sitter.Node) -> tuple[str | None, tree_sitter.Node]:
    for child in command.children:
        if child.type == "command_name":
            return _text(child), child
        if child.type == "command_name_expr":
            inner = next((c for c in walk(child) if c.type == "command_name"), None)
            return (_text(inner) if inner is not None else None), child
    return None, command


def command_calls(text: str) -> Iterator[tuple[str | None, list[str], tree_sitter.Node]]:
    """(command name or None when dynamic, its -Parameter tokens, node) for every invocation."""
    for node in walk(parse(text).root_node):
        if node.type != "command":
            continue
        name, where = _command_name(node)
        params: list[str] = []
        for child in node.children:
            if child.type == "command_elements":
                params += [
                    _text(c).lstrip("-").rstrip(":")
                    for c in child.children
                    if c.type == "command_parameter"
                ]
        yield name, params, where


def command_problems(text: str, name: str = "<script>") -> list[str]:
    """Every command that is not a documented cmdlet or local function, and every parameter
    token that does not bind to exactly one of its parameters. Splatted arguments are skipped."""
    functions = _functions(parse(text).root_node)
    problems = []
    for command, params, node in command_calls(text):
        where = _where(name, node)
        if command is None:
            problems.append(f"{where}: a dynamic command invocation cannot be checked")
            continue
        if command.lower() in functions:
            declared = {p: p for p in functions[command.lower()]}
            for param in params:
                try:
                    _bind(param, declared, command)
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
            continue
        try:
            _cmdlet_entry(command)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        problem = version_problem(command)
        if problem:
            problems.append(f"{where}: {problem}")
        for param in params:
            try:
                canonical = resolve(command, param)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problem = version_problem(command, canonical)
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


# --- the README contract ----------------------------------------------------------------------
def readme_table() -> dict[str, tuple[str, ...]]:
    """script name -> parameter names, from the table in scripts/README.md."""
    rows: dict[str, tuple[str, ...]] = {}
    for line in (SCRIPTS / "README.md").read_text("utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"[A-Z][A-Za-z]+-[A-Za-z]+", cells[0]):
            continue
        rows[cells[0]] = tuple(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", cells[1]))
    return rows


def _model_closure(model: type[BaseModel]) -> dict[str, frozenset[str]]:
    """The model and every model nested in its fields: name -> field names."""
    found: dict[str, frozenset[str]] = {}

    def visit(tp: typing.Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = frozenset(tp.model_fields)
            for field in tp.model_fields.values():
                visit(field.annotation)
        elif isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
            for arg in typing.get_args(tp):
                visit(arg)

    visit(model)
    return found


def pscustomobject_keys(text: str) -> list[tuple[frozenset[str], tree_sitter.Node]]:
    """Key sets of every [pscustomobject]@{...} literal in a script."""
    found = []
    for node in walk(parse(text).root_node):
        if node.type != "cast_expression":
            continue
        kind = next((c for c in node.children if c.type == "type_literal"), None)
        if kind is None or _text(kind).lower() != "[pscustomobject]":
            continue
        literal = next((c for c in walk(node) if c.type == "hash_literal_expression"), None)
        if literal is None:
            continue
        body = next((c for c in literal.children if c.type == "hash_literal_body"), None)
        keys = set()
        for entry in body.children if body is not None else []:
            if entry.type == "hash_entry":
                key = next(c for c in entry.children if c.type == "key_expression")
                keys.add(_text(key).strip("'\""))
        found.append((frozenset(keys), node))
    return found


# --- tests: the real scripts ------------------------------------------------------------------
@pytest.fixture(scope="module", params=[p.name for p in script_files()])
def script(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, (SCRIPTS / request.param).read_text("utf-8")


def test_scripts_parse_without_errors(script: tuple[str, str]) -> None:
    name, text = script
    assert syntax_errors(text, name) == []


def test_scripts_use_windows_powershell_5_1_syntax(script: tuple[str, str]) -> None:
    name, text = script
    assert ps7_constructs(text, name) == []


def test_every_command_and_parameter_is_documented(script: tuple[str, str]) -> None:
    name, text = script
    assert command_problems(text, name) == []


def test_house_style(script: tuple[str, str]) -> None:
    name, text = script
    assert text.lstrip().startswith("#"), f"{name}: begin with a comment saying what it prints"
    assert re.search(r"^param\(", text, re.MULTILINE), f"{name}: 'param(' on one line"
    assert not re.search(r"^\s*param\s*$", text, re.MULTILINE | re.IGNORECASE), name
    assert "cmdletbinding" not in text.lower(), f"{name}: no [CmdletBinding()]"
    root = parse(text).root_node
    body = next(c for c in root.children if c.type == "statement_list")
    statements = [c for c in body.children if c.is_named]
    assert _text(statements[0]) == "$ErrorActionPreference = 'Stop'", name
    json_calls = [
        (params, node)
        for command, params, node in command_calls(text)
        if command and command.lower() == "convertto-json"
    ]
    assert len(json_calls) == 1, f"{name}: exactly one ConvertTo-Json"
    params, _ = json_calls[0]
    bound = {resolve("ConvertTo-Json", p) for p in params}
    assert bound == {"InputObject", "Depth", "Compress"}, f"{name}: {bound}"
    assert _text(statements[-1]) == "ConvertTo-Json -InputObject $out -Depth 8 -Compress", name


def test_json_objects_match_the_model(script: tuple[str, str]) -> None:
    """Each [pscustomobject] literal has exactly the fields of the script's model or of a model
    nested in it, and the top-level model is built."""
    name, text = script
    spec = SPECS[name.removesuffix(".ps1")]
    closure = _model_closure(spec.model)
    shapes = set(closure.values())
    for keys, node in pscustomobject_keys(text):
        assert keys in shapes, (
            f"{_where(name, node)}: keys {sorted(keys)} match no model of {spec.model.__name__}"
        )
    built = {keys for keys, _ in pscustomobject_keys(text)}
    assert closure[spec.model.__name__] in built, f"{name}: never builds {spec.model.__name__}"


def test_param_blocks_match_the_readme() -> None:
    readme = readme_table()
    assert set(readme) == set(SPECS), "README table and catalog list different scripts"
    for path in script_files():
        declared = parse_param_names(path.read_text("utf-8"))
        assert declared == readme[path.stem], f"{path.name}: {declared} != {readme[path.stem]}"


def test_catalog_and_files_agree() -> None:
    assert {p.stem for p in script_files()} == set(SPECS)


def test_native_helper_is_the_same_everywhere() -> None:
    """The P/Invoke type is added once per runspace; every script must define it identically."""
    pattern = re.compile(
        r"Add-Type -Namespace HvMove -Name NativeVolume -MemberDefinition @'\n"
        r"(.*?)\n'@",
        re.DOTALL,
    )
    bodies = {p.name: pattern.findall(p.read_text("utf-8")) for p in script_files()}
    defined = {name: found[0] for name, found in bodies.items() if found}
    assert defined, "no script defines HvMove.NativeVolume"
    assert len(set(defined.values())) == 1, sorted(defined)
    for p in script_files():
        if "[HvMove.NativeVolume]" in p.read_text("utf-8"):
            assert p.name in defined, f"{p.name} uses HvMove.NativeVolume without adding it"


def test_move_vmstorage_splat_keys_are_parameters() -> None:
    """Start-StorageMove splats $moveArgs into Move-VMStorage; check the keys it sets."""
    text = (SCRIPTS / "Start-StorageMove.ps1").read_text("utf-8")
    keys = set(re.findall(r"\$moveArgs\['(\w+)'\]", text))
    assert keys >= {"DestinationStoragePath", "Vhds", "RetainVhdCopiesOnSource"}
    # the component paths are copied by name from the $paths table
    assert "$moveArgs[$name] = $paths[$name]" in text
    block = re.search(r"\$paths = \[ordered\]@\{(.*?)\}", text, re.DOTALL)
    assert block is not None
    names = set(re.findall(r"^\s*(\w+)\s*=", block.group(1), re.MULTILINE))
    assert names == {"VirtualMachinePath", "SnapshotFilePath", "SmartPagingFilePath"}
    for key in keys | names:
        assert resolve("Move-VMStorage", key) == key


def test_extra_entries_carry_a_reason() -> None:
    extra = json.loads((DATA / "cmdlets-extra.json").read_text("utf-8"))
    for name, entry in extra["cmdlets"].items():
        assert str(entry.get("reason", "")).strip(), f"{name}: say why it is needed"


def test_table_copy_is_the_reference_table() -> None:
    data = table()
    assert "Move-VMStorage" in data["cmdlets"] and data["aliases"]["%"] == "ForEach-Object"


# --- tests: the checker catches mistakes ------------------------------------------------------
def test_resolve_follows_powershell_binding() -> None:
    assert resolve("Move-VMStorage", "VMName") == "Name"
    assert resolve("Move-VMStorage", "Dest") == "DestinationStoragePath"
    assert resolve("Move-VMStorage", "ea") == "ErrorAction"
    assert resolve("%", "Process") == "Process"
    with pytest.raises(ValueError, match="ambiguous"):
        resolve("Move-VMStorage", "S")
    with pytest.raises(ValueError, match="no such parameter"):
        resolve("Get-VM", "WhatIf")
    with pytest.raises(ValueError, match="no such parameter"):  # PowerShell 7 only
        resolve("ConvertTo-Json", "AsArray")


def test_flags_unknown_cmdlet() -> None:
    problems = command_problems("param()\n$x = 1\nGet-FooBarThing -Name $x\n", "t.ps1")
    assert len(problems) == 1 and "t.ps1:3:1" in problems[0] and "Get-FooBarThing" in problems[0]


def test_flags_unknown_parameter() -> None:
    problems = command_problems("Get-VM -Id $id -Bogus 1\n", "t.ps1")
    assert len(problems) == 1 and "-Bogus" in problems[0]


def test_flags_ambiguous_prefix() -> None:
    problems = command_problems("Move-VMStorage -VM $vm -S x\n", "t.ps1")
    assert len(problems) == 1 and "ambiguous" in problems[0]
    assert "SmartPagingFilePath" in problems[0] and "SnapshotFilePath" in problems[0]


def test_flags_syntax_error() -> None:
    problems = syntax_errors("param([string]$a)\nif ($a -eq ) {\n    Get-VM\n", "t.ps1")
    assert problems and all(p.startswith("t.ps1:") for p in problems)


def test_flags_powershell_7_syntax() -> None:
    assert ps7_constructs("$a = $b ?? 'x'\n$c = $d ? 1 : 2\nGet-VM && Get-VMHost\n")


def test_flags_dynamic_invocation_and_undocumented_parameters() -> None:
    assert command_problems("& $command -Name x\n")
    assert command_problems("Get-ClusterNode -Bogus x\n")
    assert command_problems("function F($Path) { }\nF -Other 1\n")


def test_accepts_local_functions_splats_aliases_and_colon_values() -> None:
    text = (
        "function Get-Thing([string]$Path, [int]$Depth) { Get-Item -LiteralPath $Path }\n"
        "Get-Thing -Path 'C:\\' -Dep 2\n"
        "$a = @{ Name = 'x' }\n"
        "Get-VM @a -ErrorAction:SilentlyContinue\n"
        "@(1, 2) | % { $_ } | ? { $_ -gt 1 } | Select-Object -First 1\n"
        "Remove-Item -LiteralPath 'C:\\x' -Confirm:$false\n"
    )
    assert syntax_errors(text) == []
    assert command_problems(text) == []


def test_shared_helper_functions_are_identical_everywhere() -> None:
    """Each script is sent alone, so helpers are copied into every script that needs them
    (a script stays reviewable and runnable on its own). The copies must not drift: a fix to
    one is a fix to all, and this test names the files that still need it."""
    import collections
    import re

    copies: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for path in sorted(SCRIPTS.glob("*.ps1")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^function ([\w-]+).*?^}[ \t]*$", text, re.M | re.S):
            copies[m.group(1)][path.name] = m.group(0)
    drifted = {name: sorted(by) for name, by in copies.items() if len(set(by.values())) > 1}
    assert not drifted, f"helper functions differ between scripts: {drifted}"
    assert any(len(by) > 1 for by in copies.values())  # the check has something to compare
