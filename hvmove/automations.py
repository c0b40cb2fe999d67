"""hvmove's automations as code: read deployments/automations.yaml, fill in the values the config
gives (notification block, silence thresholds, nightly deployment) and tell what has to change on
a server. Pure: the Prefect side (block look-up, create/update) is hvmove/cli/automations.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from hvmove.config import NotificationsConfig
from hvmove.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "deployments" / "automations.yaml"
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


class Change(BaseModel):
    name: str
    action: Literal["create", "update", "unchanged"]
    detail: str = ""


def human(seconds: float) -> str:
    """'30 min', '25 h', '15 s': how long, for the text of a notification."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def values(notify: NotificationsConfig, block_id: str) -> dict[str, Any]:
    flow, _, deployment = notify.nightly_deployment.partition("/")
    seconds = {
        "silence": round(notify.silence_minutes * 60),
        "nightly_missed": round(notify.nightly_missed_hours * 3600),
        "zombie": round(notify.zombie_minutes * 60),
        "approval_reminder": round(notify.approval_reminder_hours * 3600),
    }
    out: dict[str, Any] = {"notification_block_id": block_id}
    out["nightly_flow"], out["nightly_deployment"] = flow, deployment or flow
    for key, s in seconds.items():
        out[f"{key}_seconds"] = s
        out[key] = human(s)
    return out


def _fill(node: Any, vals: dict[str, Any], where: str) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, vals, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, vals, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in vals:
            raise ConfigError(f"{where}: unknown placeholder ${{{m.group(1)}}}")
        return str(vals[m.group(1)])

    whole = PLACEHOLDER.fullmatch(node)
    if whole:  # a whole value keeps its type (seconds stay numbers)
        one(whole)
        return vals[whole.group(1)]
    return PLACEHOLDER.sub(one, node)


def load(vals: dict[str, Any], path: Path = DEFAULT_FILE) -> list[dict[str, Any]]:
    """The automations of the file with every ${placeholder} filled in, as Prefect's
    AutomationCore dicts; a problem names the file and the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the automations: {exc}") from None
    items = data.get("automations") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(a, dict) for a in items):
        raise ConfigError(f"{path}: expected 'automations:' with a list of automations")
    out = []
    for i, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: automations[{i}] has no name")
        out.append(_fill(item, vals, f"{path}: automations[{i}] ({name})"))
    names = [a["name"] for a in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: automation names must be unique (they are how apply matches)")
    return out


def _normal(node: Any) -> Any:
    """Comparable form: triggers get fresh ids each time they are built, and event names are
    sets (their order in a dump is arbitrary)."""
    if isinstance(node, dict):
        return {k: _normal(v) for k, v in node.items() if k != "id"}
    if isinstance(node, list):
        items = [_normal(v) for v in node]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return node


def plan(desired: list[dict[str, Any]], existing: dict[str, dict[str, Any]]) -> list[Change]:
    """What apply must do, automation by automation. Both sides are normalised JSON dumps of
    Prefect's AutomationCore (so defaults are filled in on both), keyed by name."""
    changes = []
    for want in desired:
        have = existing.get(want["name"])
        if have is None:
            changes.append(Change(name=want["name"], action="create"))
            continue
        a, b = _normal(have), _normal(want)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            changes.append(Change(name=want["name"], action="update", detail=", ".join(diff)))
        else:
            changes.append(Change(name=want["name"], action="unchanged"))
    return changes
