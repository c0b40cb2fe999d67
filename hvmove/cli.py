"""The ``hvmove`` command (Typer + Rich). A user mistake is one clear line, never a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hvmove.errors import HvmoveError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Hyper-V storage live migration, orchestrated with Prefect.",
)
lab_app = typer.Typer(no_args_is_help=True, help="The embedded lab: a local Hyper-V stand-in.")
app.add_typer(lab_app, name="lab")

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="hvmove.yaml to use (default: ./hvmove.yaml)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def friendly(fn: F) -> F:
    """Turn hvmove's own errors (bad config, unreachable host) into one line and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HvmoveError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# -- lab ------------------------------------------------------------------------------------------
@lab_app.command("up")
@friendly
def lab_up(
    dir: Annotated[Path, typer.Option("--dir", "-d", help="lab folder")] = Path("."),
    hosts: Annotated[int, typer.Option(min=1, max=64, help="number of lab hosts")] = 2,
    vms: Annotated[int, typer.Option(min=0, max=5000, help="number of VMs")] = 6,
    http: Annotated[bool, typer.Option("--http", help="plain HTTP instead of HTTPS")] = False,
) -> None:
    """Start a lab in the background and write DIR/hvmove.yaml pointing at it."""
    from hvmove.lab import process

    ports = process.up(dir, hosts=hosts, vms=vms, https=not http)
    cfg = (dir / "hvmove.yaml").resolve()
    listing = ", ".join(f"{name} on 127.0.0.1:{port}" for name, port in ports.items())
    out.print(f"lab up: {listing}")
    out.print(f"config: {cfg}")


@lab_app.command("down")
@friendly
def lab_down(
    dir: Annotated[Path, typer.Option("--dir", "-d", help="lab folder")] = Path("."),
) -> None:
    """Stop the lab running from DIR (its files stay; `lab up` resumes it, like a reboot)."""
    from hvmove.lab import process

    out.print("lab stopped" if process.down(dir) else f"no lab running in {dir.resolve()}")


# -- inventory ------------------------------------------------------------------------------------
@app.command()
@friendly
def inventory(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Hosts, volumes and VMs of every configured host."""
    from hvmove.config import load
    from hvmove.inventory import collect

    cfg = load(config)
    result = collect(cfg)
    if as_json:
        _print_json({"hosts": [_host_json(h) for h in result]})
    else:
        _print_inventory(result)
    failed = [h for h in result if h.error]
    if failed:
        for h in failed:
            err.print(f"[bold red]error:[/] {h.error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _host_json(h: Any) -> dict[str, Any]:
    return {
        "name": h.name,
        "error": h.error,
        "facts": h.facts.model_dump() if h.facts else None,
        "volumes": [v.model_dump() for v in h.volumes],
        "vms": [v.model_dump() for v in h.vms],
    }


def _gib(n: int) -> str:
    return f"{n / 1024**3:,.1f}"


def _print_inventory(hosts: list[Any]) -> None:
    for h in hosts:
        if h.error:
            continue
        f = h.facts
        out.rule(
            f"[bold]{h.name}[/]  {f.os_caption}  max storage moves {f.maximum_storage_migrations}"
            f"  running {f.running_storage_moves}"
        )
        vt = Table(title="volumes", title_justify="left")
        for col in ("volume", "kind", "fs", "capacity GiB", "free GiB", "used %"):
            vt.add_column(col, justify="right" if "GiB" in col or "%" in col else "left")
        for v in h.volumes:
            used = 100 * (1 - v.free / v.capacity) if v.capacity else 0
            vt.add_row(
                v.volume, v.kind, v.file_system, _gib(v.capacity), _gib(v.free), f"{used:.0f}"
            )
        out.print(vt)
        t = Table(title="VMs", title_justify="left")
        for col in (
            "name",
            "state",
            "disks",
            "on disk GiB",
            "virtual GiB",
            "checkpoints",
            "notes",
            "location",
        ):
            t.add_column(
                col, justify="right" if "GiB" in col or col in ("disks", "checkpoints") else "left"
            )
        for vm in h.vms:
            files = vm.vhd_files()
            notes = []
            if vm.dvd_paths:
                notes.append("ISO")
            if any(d.pass_through for d in vm.drives):
                notes.append("pass-through")
            if any(d.shared for d in vm.drives):
                notes.append("shared VHDX")
            if vm.secondary_status:
                notes.append(vm.secondary_status)
            t.add_row(
                vm.name,
                vm.state,
                str(len(vm.drives)),
                _gib(sum(x.file_size for x in files)),
                _gib(sum(d.chain[0].size for d in vm.drives if d.chain)),
                str(len(vm.checkpoints)),
                ", ".join(notes),
                vm.configuration_location,
            )
        out.print(t)


def main() -> None:  # pragma: no cover - console entry point
    app()
