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

# piped output is not wrapped at 80 columns: tables stay readable in logs and CI
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

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
        f"{s['failed_moves']} failed) for {', '.join(s['hosts'])} written to {store}"
    )
    if s["over_threshold"]:
        out.print("over 85 % now: " + ", ".join(s["over_threshold"]))


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


# -- plans: precheck, migrate ---------------------------------------------------------------------
PlanArg = Annotated[Path, typer.Argument(help="plan file (YAML: moves: [{host, vm, mode, ...}])")]
GiB = 1024**3


def _validated(config: Path | None, plan_file: Path) -> tuple[Any, list[Any]]:
    """Config, plan and inventory checked before anything starts; any problem is one line."""
    from hvmove.batch import load_and_resolve
    from hvmove.config import load
    from hvmove.store import Store

    cfg = load(config)
    moves, _ = load_and_resolve(cfg, plan_file, Store(cfg.store_url()))
    return cfg, moves


def _precheck_all(cfg: Any, moves: list[Any]) -> list[Any]:
    from hvmove.batch import precheck_all
    from hvmove.store import Store

    return precheck_all(cfg, moves, store=Store(cfg.store_url()))


@app.command()
@friendly
def precheck(plan: PlanArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Dry run: every check of every move in the plan, the ETA, the space left, the blockers.
    Exit code 0 when every move can go, 2 when some are blocked."""
    cfg, moves = _validated(config, plan)
    reports = _precheck_all(cfg, moves)
    if as_json:
        _print_json({"moves": [_report_json(r) for r in reports]})
    else:
        for r in reports:
            _print_checks(r)
        _print_precheck_summary(reports)
    if any(not r.ok for r in reports):
        raise typer.Exit(2)


def _report_json(r: Any) -> dict[str, Any]:
    space = [c.numbers for c in r.checks if c.name == "space"]
    return {
        "vm": r.vm,
        "vm_id": r.vm_id,
        "host": r.host,
        "mode": r.mode,
        "destination": r.destination,
        "ok": r.ok,
        "already_done": r.already_done,
        "bytes": r.bytes_to_copy,
        "eta_seconds": r.eta_seconds,
        "mbps": r.mbps,
        "odx": r.odx,
        "space": space,
        "blockers": [c.model_dump() for c in r.failures()],
        "checks": [c.model_dump() for c in r.checks],
    }


_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def _print_checks(r: Any) -> None:
    t = Table(title=f"{r.vm} on {r.host} -> {r.destination}", title_justify="left")
    for col in ("check", "result", "detail", "remedy"):
        t.add_column(col, overflow="fold")
    for c in r.checks:
        t.add_row(c.name, f"[{_STYLE[c.status]}]{c.status.upper()}[/]", c.detail, c.remedy)
    out.print(t)


def _print_precheck_summary(reports: list[Any]) -> None:
    from hvmove.prechecks import duration

    t = Table(title="plan", title_justify="left")
    for col in ("vm", "host", "destination", "GiB", "ETA", "ODX", "left after", "result"):
        t.add_column(col, overflow="fold")
    for r in reports:
        space = [c.numbers for c in r.checks if c.name == "space"]
        left = ", ".join(f"{n['volume']} {max(0, n['free_after']) / GiB:,.0f} GiB" for n in space)
        result = (
            "[green]already there[/]"
            if r.already_done
            else "[green]ready[/]"
            if r.ok
            else "[bold red]blocked[/]: " + "; ".join(c.name for c in r.failures())
        )
        t.add_row(
            r.vm,
            r.host,
            r.destination,
            f"{r.bytes_to_copy / GiB:,.1f}",
            duration(r.eta_seconds),
            {True: "yes", False: "no", None: "?"}[r.odx],
            left,
            result,
        )
    out.print(t)


WindowOpt = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="HH:MM-HH:MM (default: the config's), 'now' (24 h from now) or 'now+MINUTES'",
    ),
]
TzOpt = Annotated[str | None, typer.Option("--timezone", help="IANA name (default: the config's)")]
MarginOpt = Annotated[
    float | None,
    typer.Option("--margin", help="minutes before the window's end by which moves must finish"),
]


@app.command("plan")
@friendly
def plan_cmd(
    plan: PlanArg,
    config: ConfigOpt = None,
    window: WindowOpt = None,
    timezone: TzOpt = None,
    margin: MarginOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The night's schedule for a plan, without moving anything: start and P90 finish of each
    admitted move, and why the others wait."""
    from datetime import UTC, datetime, timedelta

    from hvmove import planner
    from hvmove.batch import any_window, load_and_resolve, night_inputs, precheck_all
    from hvmove.config import load
    from hvmove.store import Store

    cfg = load(config)
    store = Store(cfg.store_url())
    d = cfg.defaults
    now = datetime.now(UTC)
    win = any_window(
        window or d.window,
        now,
        timezone or d.timezone,
        timedelta(minutes=d.window_margin_minutes if margin is None else margin),
    )
    moves, inventories = load_and_resolve(cfg, plan, store)
    reports = precheck_all(cfg, moves, reserve=False, store=store)
    inputs = night_inputs(cfg, moves, reports, inventories, store)
    assert inputs.limits is not None
    sched = planner.plan(inputs.moves, inputs.volumes, inputs.limits, win, now)
    name = {mid: m.vm.name for mid, m in inputs.by_id.items()}
    data = {
        "window": [win.start.isoformat(), win.end.isoformat(), win.last_finish.isoformat()],
        "admitted": [
            {
                "vm": m.vm,
                "host": m.host,
                "bytes": m.bytes,
                "odx": m.odx,
                "start": m.start.isoformat(),
                "finish_p50": m.finish_p50.isoformat(),
                "finish_p90": m.finish_p90.isoformat(),
            }
            for m in sched.admitted
        ],
        "deferred": [
            {"vm": m.vm, "host": m.host, "reason": m.reason, "detail": m.detail}
            for m in sched.deferred
        ],
        "blocked": [{"vm": name[k], "reason": v} for k, v in inputs.blocked.items()],
        "already_done": [name[k] for k in inputs.already_done],
        "makespan_seconds": sched.makespan_seconds,
        "bytes_admitted": sched.bytes_admitted,
    }
    if as_json:
        _print_json(data)
        return
    zone = win.start.tzinfo
    t = Table(
        title=f"window {win.start:%Y-%m-%d %H:%M} - {win.end:%Y-%m-%d %H:%M} {zone}",
        title_justify="left",
    )
    for col in ("vm", "host", "GiB", "ODX", "start", "finish P90", "note"):
        t.add_column(col, overflow="fold")
    for m in sched.admitted:
        t.add_row(
            m.vm,
            m.host,
            f"{m.bytes / GiB:,.1f}",
            "yes" if m.odx else "no",
            f"{m.start.astimezone(zone):%H:%M:%S}",
            f"{m.finish_p90.astimezone(zone):%H:%M:%S}",
            "",
        )
    for m in sched.deferred:
        t.add_row(m.vm, m.host, "", "", "[yellow]deferred[/]", "", m.detail)
    for k, why in inputs.blocked.items():
        t.add_row(name[k], inputs.by_id[k].request.host, "", "", "[red]blocked[/]", "", why)
    for k in inputs.already_done:
        t.add_row(name[k], inputs.by_id[k].request.host, "", "", "done", "", "already there")
    out.print(t)
    out.print(
        f"{len(sched.admitted)} move(s), {sched.bytes_admitted / GiB:,.1f} GiB, last P90 "
        f"finish after {sched.makespan_seconds / 3600:,.2f} h"
    )


@app.command()
@friendly
def migrate(
    plan: PlanArg,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    window: Annotated[
        str,
        typer.Option("--window", help="HH:MM-HH:MM, 'now' (24 h from now) or 'now+MINUTES'"),
    ] = "now",
    timezone: TzOpt = None,
    margin: MarginOpt = None,
    poll: Annotated[float, typer.Option(help="seconds between progress polls")] = 2.0,
) -> None:
    """Run the plan's moves through Prefect (the nightly-migrations flow with each move a
    migrate-vm subflow): the planner orders them, runs them within the host and volume limits
    and the window, and defers what does not fit. Uses PREFECT_API_URL or a local server."""
    import asyncio

    _validated(config, plan)  # every mistake is one line before Prefect even starts
    api = _prefect()
    if not as_json:
        out.print(f"Prefect UI: {_ui(api)}")
    from flows.nightly import nightly
    from hvmove.config import load

    cfg = load(config)
    state = asyncio.run(
        nightly(
            plan=str(plan.resolve()),
            config=str(cfg.path),
            window=window,
            timezone=timezone,
            margin_minutes=margin,
            poll_seconds=poll,
            return_state=True,
        )
    )
    if not state.is_completed():
        raise typer.Exit(1) if as_json else _fail(state.message)
    summary = state.result()
    if as_json:
        _print_json(summary)
    else:
        _print_summary(summary)
        out.print(f"runs, logs and artifacts: {_ui(api)}/runs")
    if summary["failed"]:
        raise typer.Exit(1)


def _fail(message: str | None) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _print_summary(summary: dict[str, Any]) -> None:
    t = Table(title="night", title_justify="left")
    for col in ("vm", "host", "result", "GiB", "copy s", "why"):
        t.add_column(col, overflow="fold")
    for m in summary["moved"]:
        t.add_row(
            m["vm"],
            m["host"],
            "[green]moved[/]",
            f"{(m['bytes'] or 0) / GiB:,.1f}",
            f"{m['seconds'] or 0:,.1f}",
            "",
        )
    for key, label in (
        ("deferred", "[yellow]deferred[/]"),
        ("blocked", "[yellow]blocked[/]"),
        ("failed", "[red]failed[/]"),
    ):
        for m in summary[key]:
            t.add_row(m["vm"], m["host"], label, "", "", m["reason"])
    out.print(t)
    out.print(
        f"{len(summary['moved'])} moved, {summary['bytes'] / GiB:,.1f} GiB, mean "
        f"{summary['mean_mbps'] or 0:,.0f} MB/s"
    )


def _prefect() -> str:
    from hvmove.prefect_local import ensure_server

    return ensure_server()


def _ui(api: str) -> str:
    from hvmove.prefect_local import ui_url

    return ui_url(api)


def _move_row(r: dict[str, Any], lost_writes: int | None = None) -> dict[str, Any]:
    from hvmove.store import STEPS

    steps = {s: r.get("steps", {}).get(s, "not_run") for s in STEPS}
    row = {
        "vm": r["vm"],
        "host": r["host"],
        "status": r["status"],
        "steps": steps,
        "bytes": r.get("bytes") or 0,
        "seconds": r.get("copy_seconds"),
        "verified": bool(r.get("verified")),
        "source_removed": bool(r.get("source_removed")),
        "reason": r.get("reason", ""),
        "blockers": r.get("blockers", []),
    }
    if lost_writes is not None:
        row["lost_writes"] = lost_writes
    return row


def _print_moves(rows: list[dict[str, Any]]) -> None:
    t = Table(title="moves", title_justify="left")
    cols = ["vm", "host", "status", "GiB", "copy s", "verified", "source removed"]
    if rows and "lost_writes" in rows[0]:
        cols.append("lost writes")
    cols.append("reason")
    for col in cols:
        t.add_column(col, overflow="fold")
    colour = {"completed": "green", "blocked": "yellow", "failed": "bold red"}
    for r in rows:
        cells = [
            r["vm"],
            r["host"],
            f"[{colour.get(r['status'], 'white')}]{r['status']}[/]",
            f"{r['bytes'] / GiB:,.1f}",
            f"{r['seconds']:,.1f}" if r["seconds"] else "-",
            "yes" if r["verified"] else "no",
            "yes" if r["source_removed"] else "no",
        ]
        if "lost_writes" in r:
            cells.append(str(r["lost_writes"]))
        # the table names the failed checks; the details are in the prechecks table and the JSON
        cells.append(", ".join(r["blockers"]) if r.get("blockers") else r["reason"])
        t.add_row(*cells)
    out.print(t)


# -- history --------------------------------------------------------------------------------------
@app.command()
@friendly
def history(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV")] = False,
    limit: Annotated[int, typer.Option(help="newest N moves (0: all)")] = 0,
) -> None:
    """Past moves from the store: status, bytes, durations, throughput, verification."""
    import csv

    from hvmove.config import load
    from hvmove.store import Store, record_as_dict

    cfg = load(config)
    store = Store(cfg.store_url())
    rows = [record_as_dict(r, store.step_states(r.id)) for r in store.moves(limit or None)]
    if as_json:
        _print_json({"moves": rows})
        return
    if as_csv:
        fields = [k for k in (rows[0] if rows else {}) if k != "steps"] + ["steps"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "steps": ";".join(f"{k}={v}" for k, v in r["steps"].items())})
        return
    t = Table(title=f"moves in {cfg.store_url()}", title_justify="left")
    for col in (
        "finished",
        "vm",
        "host",
        "destination",
        "status",
        "GiB",
        "copy s",
        "est. s",
        "MB/s",
        "ODX",
        "verified",
    ):
        t.add_column(col, overflow="fold")
    for r in rows:
        mbps = r["bytes"] / r["copy_seconds"] / 1e6 if r["copy_seconds"] else None
        t.add_row(
            (r["finished_at"] or "")[:19],
            r["vm"],
            r["host"],
            r["destination"],
            r["status"],
            f"{r['bytes'] / GiB:,.1f}",
            f"{r['copy_seconds']:,.1f}" if r["copy_seconds"] else "-",
            f"{r['estimated_seconds']:,.1f}" if r["estimated_seconds"] else "-",
            f"{mbps:,.0f}" if mbps else "-",
            str(r["odx"]),
            str(r["verified"]),
        )
    out.print(t)


# -- demo -----------------------------------------------------------------------------------------
@app.command()
@friendly
def demo(
    as_json: JsonOpt = False,
    keep: Annotated[bool, typer.Option(help="keep the demo's lab folder afterwards")] = False,
) -> None:
    """Start a temporary lab, precheck and run a plan of moves through Prefect, and summarise.
    Exit 0 when every move ended as expected (moved and verified, or blocked with a reason)."""
    import shutil
    import tempfile
    import time

    from hvmove.lab.demo import build_demo, expected_status, write_demo_plan
    from hvmove.lab.process import write_config
    from hvmove.lab.server import LabServer

    t0 = time.monotonic()
    say = (lambda *_a, **_k: None) if as_json else out.print
    api = _prefect()
    say(f"Prefect server: {_ui(api)}  (open it to watch the moves)")
    lab_dir = Path(tempfile.mkdtemp(prefix="hvmove-demo-"))
    server = None
    try:
        build_demo(lab_dir)
        server = LabServer(lab_dir).start()
        write_config(lab_dir)
        say(
            f"lab: {len(server.estate.data.hosts)} hosts, {len(server.estate.data.vms)} VMs in "
            f"{lab_dir} (WinRM over HTTPS on 127.0.0.1)"
        )
        plan_file = write_demo_plan(lab_dir / "plan.yaml")
        cfg, moves = _validated(lab_dir / "hvmove.yaml", plan_file)
        reports = _precheck_all(cfg, moves)
        if not as_json:
            _print_precheck_summary(reports)
        from flows.batch import run_sequentially

        def progress(row: dict[str, Any]) -> None:
            say(
                f"  {row['vm']}: {row['status']}" + (f" ({row['reason']})" if row["reason"] else "")
            )

        results = run_sequentially(cfg, moves, batch="demo", poll_seconds=0.5, on_done=progress)
        rows = []
        by_name = {vm.name: vm for vm in server.estate.data.vms}
        for r in results:
            vm = by_name[r["vm"]]
            lost = server.engine.lost_writes(vm.id)["lost"] if vm.state == "Running" else 0
            rows.append(_move_row(r, lost))
    finally:
        if server is not None:
            server.stop()
        if not keep:
            shutil.rmtree(lab_dir, ignore_errors=True)
    expected = expected_status()
    ok = all(r["status"] == expected.get(r["vm"]) for r in rows) and all(
        r["lost_writes"] == 0
        and (r["status"] != "completed" or (r["verified"] and r["source_removed"]))
        for r in rows
    )
    if as_json:
        _print_json(
            {
                "moves": rows,
                "ok": ok,
                "seconds": round(time.monotonic() - t0, 1),
                "prefect_ui": _ui(api),
            }
        )
    else:
        _print_moves(rows)
        say(
            f"{'all moves ended as expected' if ok else 'UNEXPECTED OUTCOME'} in "
            f"{time.monotonic() - t0:,.0f} s; runs, logs and artifacts: {_ui(api)}/runs"
            + (f"; lab kept in {lab_dir}" if keep else "")
        )
    if not ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # `python -m hvmove.cli`: the same as the hvmove command
    app()
