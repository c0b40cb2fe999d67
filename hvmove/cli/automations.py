"""`hvmove automations apply`: create or update hvmove's automations (deployments/automations.yaml)
on the Prefect server in use, idempotently, and print what changed. Works the same against a
self-hosted server and Prefect Cloud (automations and notification blocks exist in both)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hvmove import automations as spec
from hvmove.cli.app import ConfigOpt, JsonOpt, app, friendly, prefect_api, print_json
from hvmove.cli.render import out, plain
from hvmove.config import Config
from hvmove.errors import ConfigError, HvmoveError

group = typer.Typer(no_args_is_help=True, help="Prefect automations: alerts and zombie runs.")
app.add_typer(group, name="automations")


def notification_block_id(client: Any, ref: str) -> str:
    """The id of the notification block REF ('TYPE-SLUG/NAME' or 'NAME'), or a clear error."""
    slug, _, name = ref.rpartition("/")
    found = [
        d
        for d in client.read_block_documents()
        if d.name == name
        and (not slug or (d.block_type and d.block_type.slug == slug))
        and d.block_schema is not None
        and "notify" in d.block_schema.capabilities
    ]
    hint = (
        "create one in the Prefect UI (Blocks: Slack Webhook, Microsoft Teams Webhook, "
        "Sendgrid Email, Custom Webhook...) or with the block's .save(NAME), then name it in "
        "hvmove.yaml as notifications.block"
    )
    if not found:
        raise ConfigError(f"no Prefect notification block named {ref!r}; {hint}")
    if len(found) > 1:
        kinds = ", ".join(f"{d.block_type.slug}/{d.name}" for d in found if d.block_type)
        raise ConfigError(f"several notification blocks are named {name!r} ({kinds}); name one")
    return str(found[0].id)


def apply(cfg: Config, path: Path = spec.DEFAULT_FILE) -> list[spec.Change]:
    """Create the automations the server lacks, update those that differ (matched by name)."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    if cfg.notifications is None:
        raise ConfigError(
            f"{cfg.path}: no 'notifications:' section; add 'notifications: {{block: NAME}}' "
            "naming the Prefect notification block the alerts go to"
        )
    with get_client(sync_client=True) as client:
        block_id = notification_block_id(client, cfg.notifications.block)
        wanted: dict[str, Any] = {}
        for item in spec.load(spec.values(cfg.notifications, block_id), path):
            try:
                wanted[item["name"]] = AutomationCore.model_validate(item)
            except ValueError as exc:
                raise ConfigError(f"{path}: automation {item['name']!r}: {exc}") from None
        on_server: dict[str, Any] = {}
        for auto in client.read_automations():
            if auto.name in wanted:
                on_server.setdefault(auto.name, auto)
        changes = spec.plan(
            [a.model_dump(mode="json") for a in wanted.values()],
            {n: a.model_dump(mode="json", exclude={"id"}) for n, a in on_server.items()},
        )
        for change in changes:
            core = wanted[change.name]
            if change.action == "create":
                client.create_automation(core)
            elif change.action == "update":
                # a full PUT: the client's update sends only the fields set explicitly
                reply = client.request(
                    "PUT",
                    "/automations/{id}",
                    path_params={"id": on_server[change.name].id},
                    json=core.model_dump(mode="json", exclude={"owner_resource"}),
                )
                reply.raise_for_status()
    return changes


@group.command("apply")
@friendly
def apply_command(
    config: ConfigOpt = None,
    file: Annotated[
        Path, typer.Option("--file", help="automations file (Prefect's format, ${placeholders})")
    ] = spec.DEFAULT_FILE,
    as_json: JsonOpt = False,
) -> None:
    """Create or update hvmove's automations on the Prefect server in use; print what changed."""
    from hvmove.config import load

    cfg = load(config)
    api = prefect_api()
    try:
        changes = apply(cfg, file)
    except HvmoveError:
        raise
    except Exception as exc:  # the server refused or could not be reached: say which
        raise HvmoveError(f"{api}: could not apply the automations: {exc}") from None
    if as_json:
        print_json({"api": api, "changes": [c.model_dump() for c in changes]})
        return
    verbs = {
        "create": "[green]created[/]",
        "update": "[yellow]updated[/]",
        "unchanged": "unchanged",
    }
    for c in changes:
        extra = f" ({plain(c.detail)})" if c.detail else ""
        out.print(f"{verbs[c.action]:>22}  {plain(c.name)}{extra}")
    out.print(f"on {plain(api)}")
