"""Offline check of the WMI the scripts use: every Hyper-V class (Msvm_*) a script names, and every
property or method it reads from an object of such a class, must be documented - in
tests/data/wmi-classes.json (the reference table) or, with a reason and a source page, in
tests/data/wmi-extra.json. The checker takes script text, so the negative tests prove it catches
a misspelt class, property or method."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "hvmove" / "hyperv" / "scripts"
DATA = Path(__file__).resolve().parent / "data"
# members every WMI/CIM object has in PowerShell (ManagementObject / CimInstance adapters)
OBJECT_MEMBERS = {
    "GetText",
    "GetRelated",
    "CreateInstance",
    "Put",
    "Properties",
    "CimClassProperties",
}

CLASS_RE = r"(Msvm_\w+)"
ASSIGN_FROM_QUERY = re.compile(r"\$(\w+)\s*=\s*@?\(?[^\n]*?-Class(?:Name)?\s+" + CLASS_RE)
FOREACH_RELATED = re.compile(
    r"foreach\s*\(\s*\$(\w+)\s+in\s+@?\(?\$\w+\.GetRelated\('" + CLASS_RE + r"'\)"
)
FOREACH_OVER = re.compile(r"foreach\s*\(\s*\$(\w+)\s+in\s+@?\(?\$(\w+)\s*\)?\s*\)")
ASSIGN_COPY = re.compile(r"\$(\w+)\s*=\s*\$(\w+)\s*(?:$|\})", re.M)
ASSIGN_CREATE = re.compile(r"\$(\w+)\s*=\s*\$(\w+)\.CreateInstance\(\)")
MEMBER = re.compile(r"\$(\w+)\.(\w+)")
INVOKE = re.compile(r"Invoke-CimMethod\s+-InputObject\s+\$(\w+)\s+-MethodName\s+(\w+)")


@cache
def table() -> dict[str, dict[str, set[str]]]:
    """class -> {'members': properties and methods}; the reference table plus the extras."""
    out: dict[str, dict[str, set[str]]] = {}
    ref = json.loads((DATA / "wmi-classes.json").read_text("utf-8"))["classes"]
    for name, entry in ref.items():
        out[name] = {"members": set(entry.get("properties", {})) | set(entry.get("methods", {}))}
    extra = json.loads((DATA / "wmi-extra.json").read_text("utf-8"))["classes"]
    for name, entry in extra.items():
        members = set(entry.get("properties", [])) | set(entry.get("methods", []))
        out.setdefault(name, {"members": set()})["members"] |= members
    return out


def variable_classes(text: str) -> dict[str, str]:
    """$variable -> the Msvm class of the object(s) it holds, as far as the text shows it."""
    found: dict[str, str] = {}
    for m in ASSIGN_FROM_QUERY.finditer(text):
        found[m.group(1)] = m.group(2)
    for m in FOREACH_RELATED.finditer(text):
        found[m.group(1)] = m.group(2)
    for _ in range(3):  # follow copies, loops and CreateInstance a few steps
        for m in FOREACH_OVER.finditer(text):
            if m.group(2) in found:
                found.setdefault(m.group(1), found[m.group(2)])
        for m in ASSIGN_COPY.finditer(text):
            if m.group(2) in found:
                found.setdefault(m.group(1), found[m.group(2)])
        for m in ASSIGN_CREATE.finditer(text):
            if m.group(2) in found:
                found.setdefault(m.group(1), found[m.group(2)])
    return found


def wmi_problems(text: str, name: str = "<script>") -> list[str]:
    known = table()
    problems = [
        f"{name}: class {c} is not documented in the tables"
        for c in sorted(set(re.findall(CLASS_RE, text)))
        if c not in known
    ]
    classes = variable_classes(text)
    uses = [(m.group(1), m.group(2)) for m in MEMBER.finditer(text)]
    uses += [(m.group(1), m.group(2)) for m in INVOKE.finditer(text)]
    for var, member in uses:
        cls = classes.get(var)
        if cls is None or cls not in known or member in OBJECT_MEMBERS:
            continue
        if member not in known[cls]["members"]:
            problems.append(f"{name}: ${var}.{member}: {cls} has no such property or method")
    return problems


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.ps1")), ids=lambda p: p.name)
def test_scripts_use_documented_wmi(path: Path) -> None:
    assert wmi_problems(path.read_text("utf-8"), path.name) == []


def test_the_wmi_keep_source_path_is_checked() -> None:
    """The check sees the classes and members of the WMI storage migration (not vacuous)."""
    text = (SCRIPTS / "Start-StorageMove.ps1").read_text("utf-8")
    classes = variable_classes(text)
    assert classes["service"] == "Msvm_VirtualSystemMigrationService"
    assert classes["migration"] == "Msvm_VirtualSystemMigrationSettingData"
    assert classes["disk"] == "Msvm_StorageAllocationSettingData"
    assert classes["realized"] == "Msvm_VirtualSystemSettingData"


def test_extra_classes_carry_a_reason_and_a_source() -> None:
    extra = json.loads((DATA / "wmi-extra.json").read_text("utf-8"))["classes"]
    for name, entry in extra.items():
        assert entry.get("reason") and str(entry.get("source", "")).startswith("https://"), name


def test_table_copy_is_the_reference_table() -> None:
    ref = Path("/work/shared/reference/wmi-classes.json")
    if ref.exists():
        assert (DATA / "wmi-classes.json").read_bytes() == ref.read_bytes()


def test_flags_an_undocumented_class_property_and_method() -> None:
    text = (
        "$svc = Get-CimInstance -Namespace 'root\\virtualization\\v2' -ClassName Msvm_Bogus\n"
        "$s = Get-WmiObject -Namespace $ns -Class Msvm_VirtualSystemMigrationSettingData -List\n"
        "$m = $s.CreateInstance()\n"
        "$m.AvoidRemovingVhdz = $true\n"
        "$j = Get-CimInstance -Namespace $ns -ClassName Msvm_MigrationJob\n"
        "Invoke-CimMethod -InputObject $j -MethodName Cancel\n"
    )
    problems = wmi_problems(text)
    assert any("Msvm_Bogus" in p for p in problems)
    assert any("AvoidRemovingVhdz" in p for p in problems)
    assert any("Cancel" in p for p in problems)
    good = text.replace("Msvm_Bogus", "Msvm_MigrationJob").replace("Vhdz", "VHDs")
    assert wmi_problems(good.replace("Cancel", "RequestStateChange")) == []
