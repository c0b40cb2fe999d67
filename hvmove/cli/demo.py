"""`hvmove demo`: a temporary lab, a plan of moves run through Prefect, and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hvmove.cli.app import JsonOpt, app, friendly, prefect_api, print_json, ui
from hvmove.cli.moves import precheck_all, validated
from hvmove.cli.render import out, plain, print_moves, print_precheck_summary
from hvmove.errors import HvmoveError


def move_row(r: dict[str, Any], lost_writes: int | None = None) -> dict[str, Any]:
    from hvmove.store import STEPS

    row = {
        "vm": r["vm"],
        "host": r["host"],
        "status": r["status"],
        "steps": {s: r.get("steps", {}).get(s, "not_run") for s in STEPS},
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


def _as_expected(rows: list[dict[str, Any]]) -> bool:
    """Every move ended as the demo estate says it must, no guest write was lost, and every
    completed move was verified before its source was removed."""
    from hvmove.lab.demo import expected_status

    expected = expected_status()
    return all(
        r["status"] == expected.get(r["vm"])
        and r["lost_writes"] == 0
        and (r["status"] != "completed" or (r["verified"] and r["source_removed"]))
        for r in rows
    )


def _night_rows(summary: dict[str, Any], cfg: Any, server: Any) -> list[dict[str, Any]]:
    """One row a VM of the plan: moved and failed ones from the store (steps, verification,
    cleanup), blocked and deferred ones from the night's summary (their reason)."""
    from hvmove.store import Store, record_as_dict

    store = Store(cfg.store_url())
    vms = {vm.name: vm for vm in server.estate.data.vms}
    waited = {
        m["vm"]: (status, m["reason"])
        for key, status in (("blocked", "blocked"), ("deferred", "deferred"))
        for m in summary[key]
    }
    rows = []
    for name, vm in vms.items():
        host = vm.host
        record = store.latest(host, vm.id)
        if name in waited:
            status, reason = waited[name]
            row = move_row({"vm": name, "host": host, "status": status, "reason": reason})
        elif record is not None:
            row = move_row(record_as_dict(record, store.step_states(record.id)))
        else:
            continue  # not in the plan
        running = vm.state == "Running" and row["status"] == "completed"
        row["lost_writes"] = server.engine.lost_writes(vm.id)["lost"] if running else 0
        rows.append(row)
    return rows


def _run_demo(lab_dir: Path, say: Any, show_tables: bool) -> tuple[list[dict[str, Any]], str]:
    """The demo plan run as a night (the nightly flow the deployment runs): moves in parallel
    within the hosts' limits, blocked and deferred ones named, a night run that links to its
    move runs in the UI."""
    from flows.nightly import nightly
    from hvmove.lab.demo import build_demo, write_demo_plan
    from hvmove.lab.process import write_config
    from hvmove.lab.server import LabServer

    build_demo(lab_dir)
    server = LabServer(lab_dir).start()
    try:
        write_config(lab_dir)
        say(
            f"lab: {len(server.estate.data.hosts)} hosts, {len(server.estate.data.vms)} VMs in "
            f"{plain(lab_dir)} (WinRM over HTTPS on 127.0.0.1)"
        )
        plan_file = write_demo_plan(lab_dir / "plan.yaml")
        cfg, moves = validated(lab_dir / "hvmove.yaml", plan_file)
        if show_tables:
            print_precheck_summary(precheck_all(cfg, moves))
        say("running the plan as a night (the nightly-migrations flow)...")
        state = nightly(
            plan=str(plan_file), config=str(cfg.path), window="now", poll_seconds=0.5,
            return_state=True,
        )  # fmt: skip
        summary = state.result(raise_on_failure=False)
        if not isinstance(summary, dict):
            raise HvmoveError(f"the demo night did not run: {state.message}")
        return _night_rows(summary, cfg, server), f"{state.name}: {state.message}"
    finally:
        server.stop()


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

    t0 = time.monotonic()
    say = (lambda *_a, **_k: None) if as_json else out.print
    api = prefect_api()
    say(f"Prefect server: {ui(api)}  (open it to watch the moves)")
    lab_dir = Path(tempfile.mkdtemp(prefix="hvmove-demo-"))
    try:
        rows, night = _run_demo(lab_dir, say, show_tables=not as_json)
    finally:
        if not keep:
            shutil.rmtree(lab_dir, ignore_errors=True)
    ok = _as_expected(rows)
    seconds = time.monotonic() - t0
    if as_json:
        print_json(
            {
                "moves": rows,
                "night": night,
                "ok": ok,
                "seconds": round(seconds, 1),
                "prefect_ui": ui(api),
            }
        )
    else:
        print_moves(rows)
        say(plain(f"night: {night}"))
        say(
            f"{'all moves ended as expected' if ok else 'UNEXPECTED OUTCOME'} in "
            f"{seconds:,.0f} s; runs, logs and artifacts: {ui(api)}/runs"
            + (f"; lab kept in {plain(lab_dir)}" if keep else "")
        )
    if not ok:
        raise typer.Exit(1)
