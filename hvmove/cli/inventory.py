"""`hvmove inventory`: hosts, volumes and VMs of every configured host."""

from __future__ import annotations

from typing import Any

import typer

from hvmove.cli.app import ConfigOpt, JsonOpt, app, friendly, print_json
from hvmove.cli.render import err, plain, print_inventory


@app.command()
@friendly
def inventory(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Hosts, volumes and VMs of every configured host."""
    from hvmove.config import load
    from hvmove.inventory import collect

    result = collect(load(config))
    if as_json:
        print_json({"hosts": [_host_json(h) for h in result]})
    else:
        print_inventory(result)
    failed = [h for h in result if h.error]
    for h in failed:
        err.print(f"[bold red]error:[/] {plain(h.error)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _host_json(h: Any) -> dict[str, Any]:
    return {
        "name": h.name,
        "error": h.error,
        "facts": h.facts.model_dump() if h.facts else None,
        "volumes": [v.model_dump() for v in h.volumes],
        "vms": [v.model_dump() for v in h.vms],
    }
