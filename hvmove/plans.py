"""Plan files: the moves an admin asks for, validated against the config and the inventory
before anything starts. Every mistake is one line naming the file and the entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from hvmove.config import Config, describe_validation_error
from hvmove.errors import ConfigError
from hvmove.layout import norm
from hvmove.models import MoveRequest, Plan, VMInfo
from hvmove.paths import path_problem


class PlanError(ConfigError):
    pass


@dataclass
class ResolvedMove:
    request: MoveRequest
    vm: VMInfo


def load_plan(path: Path | str) -> Plan:
    file = Path(path)
    if not file.exists():
        raise PlanError(f"{file}: plan file not found")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PlanError(f"{file}: not valid YAML: {where}{getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or "moves" not in data:
        raise PlanError(
            f"{file}: expected a mapping with a 'moves:' list, e.g. "
            "moves: [{host: hv01, vm: web01, mode: all, destination: 'E:\\VMs\\web01'}]"
        )
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"{file}: {_entry_error(exc, data)}") from None
    for i, move in enumerate(plan.moves):
        problem = request_problem(move)
        if problem:
            raise PlanError(f"{file}: moves[{i}] ({move.label()}): {problem}")
    return plan


def _entry_error(exc: ValidationError, data: dict) -> str:
    text = describe_validation_error(exc, data)
    # name the entry by vm@host rather than by the 'name' key plans do not have
    loc = exc.errors()[0]["loc"]
    if len(loc) >= 2 and loc[0] == "moves" and isinstance(loc[1], int):
        entries = data.get("moves") or []
        if loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            entry = entries[loc[1]]
            label = f"{entry.get('vm', '?')}@{entry.get('host', '?')}"
            text = text.replace(f"moves[{loc[1]}]", f"moves[{loc[1]}] ({label})", 1)
    return text


def request_problem(m: MoveRequest) -> str:
    """What is wrong with a request on its own (before looking at any host), or ''."""
    where = _path_problem(m)
    if where:
        return where
    if m.mode == "all":
        if not m.destination:
            return "mode 'all' needs 'destination:' (one folder for everything)"
        if m.vhds or m.virtual_machine_path or m.snapshot_file_path or m.smart_paging_file_path:
            return "mode 'all' takes only 'destination:'; use mode 'components' for separate paths"
    else:
        if m.destination:
            return f"mode {m.mode!r} does not take 'destination:'; list disks under 'vhds:'"
        if m.mode == "vhds" and not m.vhds:
            return "mode 'vhds' needs 'vhds:' with source/destination pairs"
        if m.mode == "vhds" and (
            m.virtual_machine_path or m.snapshot_file_path or m.smart_paging_file_path
        ):
            return "mode 'vhds' moves only disks; use mode 'components' to move other files"
        if m.mode == "components" and not (
            m.vhds or m.virtual_machine_path or m.snapshot_file_path or m.smart_paging_file_path
        ):
            return (
                "mode 'components' needs at least one of virtual_machine_path, "
                "snapshot_file_path, smart_paging_file_path, vhds"
            )
        seen: set[str] = set()
        for v in m.vhds:
            if norm(v.source) in seen:
                return f"disk '{v.source}' is listed twice"
            if norm(v.source) == norm(v.destination):
                return f"disk '{v.source}': destination equals source; give where it moves to"
            seen.add(norm(v.source))
            if (
                v.source.replace("/", "\\").rsplit("\\", 1)[-1].lower()
                != v.destination.replace("/", "\\").rsplit("\\", 1)[-1].lower()
            ):
                return (
                    f"'{v.destination}': Move-VMStorage keeps file names; the destination "
                    f"must end in the source's file name"
                )
    return ""


def _path_problem(m: MoveRequest) -> str:
    """The first path of the request that breaks a Windows naming rule, named by its field."""
    named = [
        ("destination", m.destination),
        ("virtual_machine_path", m.virtual_machine_path),
        ("snapshot_file_path", m.snapshot_file_path),
        ("smart_paging_file_path", m.smart_paging_file_path),
    ]
    for i, v in enumerate(m.vhds):
        named += [(f"vhds[{i}].source", v.source), (f"vhds[{i}].destination", v.destination)]
    for field, path in named:
        problem = path_problem(path) if path else ""
        if problem:
            return f"{field}: {problem}"
    return ""


def find_vm(vms: list[VMInfo], ref: str) -> VMInfo | None:
    key = ref.strip("{}").lower()
    for vm in vms:
        if vm.id.lower() == key:
            return vm
    named = [vm for vm in vms if vm.name.lower() == ref.lower()]
    return named[0] if len(named) == 1 else None


def resolve(
    plan: Plan,
    config: Config,
    inventories: dict[str, list[VMInfo]],
    file: Path | str = "plan",
    known_targets: set[tuple[str, str]] | None = None,
) -> list[ResolvedMove]:
    """Check every entry against the config and the hosts' inventories; nothing starts when
    any entry is wrong. ``known_targets``: (vm id, destination) pairs the store has seen, so that
    rerunning a plan to resume or confirm a move is not mistaken for a no-op entry."""
    known_targets = known_targets or set()
    out: list[ResolvedMove] = []
    seen: dict[tuple[str, str], int] = {}
    for i, move in enumerate(plan.moves):
        where = f"{file}: moves[{i}] ({move.label()})"
        try:
            host = config.host(move.host)
        except ConfigError:
            known = ", ".join(h.name for h in config.hosts)
            raise PlanError(
                f"{where}: unknown host {move.host!r} (hosts in the config: {known})"
            ) from None
        vms = inventories.get(host.name, [])
        vm = find_vm(vms, move.vm)
        if vm is None:
            same = [v for v in vms if v.name.lower() == move.vm.lower()]
            if len(same) > 1:
                raise PlanError(
                    f"{where}: {len(same)} VMs are named {move.vm!r} on {host.name}; "
                    "give the VM id instead"
                )
            raise PlanError(f"{where}: no VM {move.vm!r} on host {host.name}")
        key = (host.name.lower(), vm.id.lower())
        if key in seen:
            raise PlanError(
                f"{where}: VM {vm.name} is already moved by moves[{seen[key]}]; "
                "one move per VM per plan"
            )
        seen[key] = i
        problem = _against_vm(move, vm, known_targets)
        if problem:
            raise PlanError(f"{where}: {problem}")
        out.append(ResolvedMove(request=move.model_copy(update={"host": host.name}), vm=vm))
    return out


def _against_vm(move: MoveRequest, vm: VMInfo, known_targets: set[tuple[str, str]]) -> str:
    files = {norm(v.path) for v in vm.vhd_files()}
    for v in move.vhds:
        if norm(v.source) not in files and norm(v.destination) not in files:
            return (
                f"'{v.source}' is not a disk of {vm.name} (its disks: "
                + ", ".join(sorted(x.path for x in vm.vhd_files()))
                + ")"
            )
    if (
        move.mode == "all"
        and move.destination
        and norm(move.destination) == norm(vm.configuration_location)
        and (vm.id.lower(), norm(move.destination)) not in known_targets
    ):
        # the same destination recorded for this VM before means a rerun (resume): allowed
        return (
            f"destination '{move.destination}' is the VM's current location; nothing would "
            "move - give the folder to move to"
        )
    return ""
