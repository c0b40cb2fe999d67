"""`hvmove history`: past moves from the store."""

from __future__ import annotations

import csv
import sys
from typing import Annotated

import typer

from hvmove.cli.app import ConfigOpt, JsonOpt, app, friendly, print_json
from hvmove.cli.render import print_history


@app.command()
@friendly
def history(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV")] = False,
    limit: Annotated[int, typer.Option(help="newest N moves (0: all)")] = 0,
) -> None:
    """Past moves from the store: status, bytes, durations, throughput, verification."""
    from hvmove.config import load
    from hvmove.store import Store, loaded_step_states, record_as_dict

    cfg = load(config)
    store = Store(cfg.store_url())
    rows = [record_as_dict(r, loaded_step_states(r)) for r in store.moves(limit or None)]
    if as_json:
        print_json({"moves": rows})
    elif as_csv:
        fields = [k for k in (rows[0] if rows else {}) if k != "steps"] + ["steps"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "steps": ";".join(f"{k}={v}" for k, v in r["steps"].items())})
    else:
        print_history(rows, cfg.store_url())
