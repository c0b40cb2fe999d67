"""deployments/automations.yaml filled from the config, the apply plan, and the progress gate
that paces `hvmove.move.progress` (no Prefect server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmove import automations as spec
from hvmove.config import NotificationsConfig
from hvmove.errors import ConfigError
from hvmove.progress import ProgressGate


def _filled(**notify) -> list[dict]:
    cfg = NotificationsConfig(block="hvmove-alerts", **notify)
    return spec.load(spec.values(cfg, "1b9c0a66-5a8f-4c3e-9d59-0c2f7f0f2a11"))


def test_file_is_valid_for_prefect_and_filled_from_the_config() -> None:
    from prefect.events.schemas.automations import AutomationCore

    autos = {a["name"]: a for a in _filled(silence_minutes=45, nightly_deployment="n/night")}
    assert set(autos) >= {
        "hvmove: move failed",
        "hvmove: move silent",
        "hvmove: nightly did not start",
        "hvmove: crash zombie runs",
        "hvmove: cleanup approvals waiting",
    }
    for a in autos.values():
        core = AutomationCore.model_validate(a)  # what apply sends
        assert "${" not in core.model_dump_json()
    silent = autos["hvmove: move silent"]["trigger"]
    assert silent["within"] == 2700 and "45 min" in autos["hvmove: move silent"]["description"]
    assert silent["after"] == ["hvmove.move.progress"]
    nightly = autos["hvmove: nightly did not start"]["trigger"]
    assert nightly["within"] == 25 * 3600
    assert [m["prefect.resource.name"] for m in nightly["match_related"]] == ["n", "night"]
    zombie = autos["hvmove: crash zombie runs"]
    assert zombie["actions"][0] == {
        "type": "change-flow-run-state",
        "state": "CRASHED",
        "message": zombie["actions"][0]["message"],
    }
    # a suspended approval run sends no heartbeats: it must not be crashed
    assert "prefect.flow-run.Suspended" in zombie["trigger"]["expect"]
    block_ids = {
        act["block_document_id"]
        for a in autos.values()
        for act in a["actions"]
        if act["type"] == "send-notification"
    }
    assert block_ids == {"1b9c0a66-5a8f-4c3e-9d59-0c2f7f0f2a11"}


def test_unknown_placeholder_is_named(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("automations:\n  - name: x\n    trigger: {within: '${silence_secs}'}\n")
    cfg = NotificationsConfig(block="b")
    with pytest.raises(ConfigError, match=r"automations\[0\] \(x\).trigger.within.*silence_secs"):
        spec.load(spec.values(cfg, "id"), f)


def test_plan_creates_updates_and_leaves_alone() -> None:
    want = [
        {"name": "a", "trigger": {"id": "t1", "within": 10}},
        {"name": "b", "trigger": {"id": "t2", "within": 10}},
        {"name": "c", "trigger": {"id": "t3", "within": 10}},
    ]
    have = {
        "a": {"name": "a", "trigger": {"id": "other", "within": 10}},  # trigger ids differ only
        "b": {"name": "b", "trigger": {"id": "t2", "within": 20}},
    }
    got = {c.name: (c.action, c.detail) for c in spec.plan(want, have)}
    assert got == {"a": ("unchanged", ""), "b": ("update", "trigger"), "c": ("create", "")}


def test_progress_gate_each_ten_percent_and_at_most_once_a_minute() -> None:
    gate = ProgressGate()
    seen = [(0, 0), (1, 1), (2, 5), (3, 10), (4, 11), (63, 11), (64, 11), (100, 12), (124, 12)]
    # 0 first; 10 crosses a step; 11 a minute after 10; 12 only a minute after 11
    assert [(t, p) for t, p in seen if gate.due(p, t)] == [(0, 0), (3, 10), (63, 11), (124, 12)]
    gate = ProgressGate()
    assert [p for p in (3, 9, 19, 19, 23, 100) if gate.due(p, 5.0)] == [3, 19, 23, 100]
