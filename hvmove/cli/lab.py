"""`hvmove lab ...`: the embedded lab, a local Hyper-V stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hvmove.cli.app import ConfigOpt, app, friendly
from hvmove.cli.render import out, plain

lab_app = typer.Typer(no_args_is_help=True, help="The embedded lab: a local Hyper-V stand-in.")
app.add_typer(lab_app, name="lab")

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="lab folder")]


@lab_app.command("up")
@friendly
def lab_up(
    dir: DirOpt = Path("."),
    hosts: Annotated[int, typer.Option(min=1, max=64, help="number of lab hosts")] = 2,
    vms: Annotated[int, typer.Option(min=0, max=5000, help="number of VMs")] = 6,
    http: Annotated[
        bool, typer.Option("--http", help="plain HTTP (port 5985 style, messages encrypted)")
    ] = False,
    basic: Annotated[
        bool, typer.Option("--basic", help="log on with Basic instead of Negotiate (NTLM)")
    ] = False,
) -> None:
    """Start a lab in the background and write DIR/hvmove.yaml pointing at it."""
    from hvmove.lab import process

    ports = process.up(
        dir, hosts=hosts, vms=vms, https=not http, auth="basic" if basic else "negotiate"
    )
    cfg = (dir / "hvmove.yaml").resolve()
    listing = ", ".join(f"{name} on 127.0.0.1:{port}" for name, port in ports.items())
    out.print(f"lab up: {plain(listing)}")
    out.print(f"config: {plain(cfg)}")


@lab_app.command("down")
@friendly
def lab_down(dir: DirOpt = Path(".")) -> None:
    """Stop the lab running from DIR (its files stay; `lab up` resumes it, like a reboot)."""
    from hvmove.lab import process

    out.print("lab stopped" if process.down(dir) else f"no lab running in {plain(dir.resolve())}")


@lab_app.command("history")
@friendly
def lab_history(
    days: Annotated[int, typer.Option(min=2, max=3650, help="days of daily snapshots")] = 60,
    store: Annotated[
        str | None, typer.Option("--store", help="store URL (default: the config's store)")
    ] = None,
    dir: Annotated[
        Path | None, typer.Option("--dir", "-d", help="lab folder whose hosts, VMs to use")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same history)")] = 7,
    replace: Annotated[
        bool, typer.Option("--replace", help="regenerate over an earlier generated history")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Fill a store with DAYS of generated snapshots and past moves, for the capacity notebook.
    In a lab folder it uses the lab's real hosts, volumes and VMs, so the notebook's rebalancing
    plan passes `hvmove precheck` against that lab."""
    from hvmove.config import DEFAULT_CONFIG, load
    from hvmove.lab.estate import Estate
    from hvmove.lab.history import generate_history

    lab_dir = dir or (Path(".") if (Path(".") / "estate.json").exists() else None)
    estate = Estate.load(lab_dir) if lab_dir is not None else None
    if store is None:
        cfg_file = config or (Path(".") / DEFAULT_CONFIG)
        store = load(cfg_file).store_url() if cfg_file.exists() else "sqlite:///hvmove.db"
    s = generate_history(store, days=days, seed=seed, lab_estate=estate, replace=replace)
    out.print(
        f"{s['snapshots']} snapshots and {s['moves']} moves ({s['odx_moves']} with ODX, "
        f"{s['failed_moves']} failed) for {plain(', '.join(s['hosts']))} written to {plain(store)}"
    )
    if s["over_threshold"]:
        out.print("over 85 % now: " + plain(", ".join(s["over_threshold"])))
