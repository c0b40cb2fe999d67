"""`hvmove precheck`, `hvmove plan` and `hvmove migrate`: a plan checked, scheduled and run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hvmove.cli.app import (
    ConfigOpt,
    JsonOpt,
    PlanArg,
    app,
    fail,
    friendly,
    prefect_api,
    print_json,
    ui,
)
from hvmove.cli.render import (
    out,
    print_checks,
    print_precheck_summary,
    print_schedule,
    print_summary,
)

WindowOpt = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="HH:MM-HH:MM (default: the config's), 'now' (24 h from now) or 'now+MINUTES'",
    ),
]
MarginOpt = Annotated[
    float | None,
    typer.Option("--margin", help="minutes before the window's end by which moves must finish"),
]


def validated(config: Path | None, plan_file: Path) -> tuple[Any, list[Any]]:
    """Config, plan and inventory checked before anything starts; any problem is one line."""
    from hvmove.batch import load_and_resolve
    from hvmove.config import load
    from hvmove.store import Store

    cfg = load(config)
    moves, _ = load_and_resolve(cfg, plan_file, Store(cfg.store_url()))
    return cfg, moves


def precheck_all(cfg: Any, moves: list[Any]) -> list[Any]:
    from hvmove.batch import precheck_all
    from hvmove.store import Store

    return precheck_all(cfg, moves, store=Store(cfg.store_url()))


@app.command()
@friendly
def precheck(plan: PlanArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Dry run: every check of every move in the plan, the ETA, the space left, the blockers.
    Exit code 0 when every move can go, 2 when some are blocked."""
    cfg, moves = validated(config, plan)
    reports = precheck_all(cfg, moves)
    if as_json:
        print_json({"moves": [_report_json(r) for r in reports]})
    else:
        for r in reports:
            print_checks(r)
        print_precheck_summary(reports)
    if any(not r.ok for r in reports):
        raise typer.Exit(2)


def _report_json(r: Any) -> dict[str, Any]:
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
        "space": [c.numbers for c in r.checks if c.name == "space"],
        "blockers": [c.model_dump() for c in r.failures()],
        "checks": [c.model_dump() for c in r.checks],
    }


@app.command("plan")
@friendly
def plan_cmd(
    plan: PlanArg,
    config: ConfigOpt = None,
    window: WindowOpt = None,
    margin: MarginOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The night's schedule for a plan, without moving anything: start and P90 finish of each
    admitted move, and why the others wait. Times are in the config's time zone
    (defaults.timezone), the one the nightly deployment's schedule uses too."""
    from datetime import UTC, datetime

    from hvmove import planning
    from hvmove.config import load
    from hvmove.store import Store

    cfg = load(config)
    night = planning.prepare(
        cfg,
        plan,
        Store(cfg.store_url()),
        now=datetime.now(UTC),
        window_text=window,
        margin_minutes=margin,
    )
    sched, inputs, win = night.schedule, night.inputs, night.window
    if as_json:
        print_json(_schedule_json(sched, inputs, win))
        return
    host = {mid: m.request.host for mid, m in inputs.by_id.items()}
    name = {mid: m.vm.name for mid, m in inputs.by_id.items()}
    others = (
        [(m.vm, m.host, "[yellow]deferred[/]", m.detail) for m in sched.deferred]
        + [(name[k], host[k], "[red]blocked[/]", why) for k, why in inputs.blocked.items()]
        + [(name[k], host[k], "done", "already there") for k in inputs.already_done]
    )
    print_schedule(sched, others, win)


def _schedule_json(sched: Any, inputs: Any, win: Any) -> dict[str, Any]:
    name = {mid: m.vm.name for mid, m in inputs.by_id.items()}
    return {
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
    margin: MarginOpt = None,
    poll: Annotated[float, typer.Option(help="seconds between progress polls")] = 2.0,
) -> None:
    """Run the plan's moves through Prefect (the nightly-migrations flow, each move a
    migrate-vm subflow): the planner orders them, runs them within the host and volume limits
    and the window, and defers what does not fit. Uses the Prefect API your Prefect settings
    name (environment, profile, .env), else a local server it starts.

    Exit codes: 0 every admitted move completed; 2 some moves were blocked by prechecks,
    deferred by the window or cancelled (none failed); 1 a move failed, or the night could not
    run (the error says why).

    Runs started here live in this process: to cancel one from the Prefect UI, run the nightly
    deployment instead (README, "Production")."""
    validated(config, plan)  # every mistake is one line before Prefect even starts
    api = prefect_api()
    if not as_json:
        out.print(f"Prefect UI: {ui(api)}")
    from flows.nightly import nightly
    from hvmove.config import load
    from hvmove.reports import night_verdict

    cfg = load(config)
    state = nightly(
        plan=str(plan.resolve()),
        config=str(cfg.path),
        window=window,
        margin_minutes=margin,
        poll_seconds=poll,
        return_state=True,
    )
    summary = state.result(raise_on_failure=False)
    if not isinstance(summary, dict):  # the night crashed: its report is in the UI
        if as_json:
            raise typer.Exit(1)
        fail(state.message)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
        out.print(f"{state.name}: {state.message}")
        out.print(f"runs, logs and artifacts: {ui(api)}/runs")
    raise typer.Exit(night_verdict(summary).exit_code)
