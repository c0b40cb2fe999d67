"""`hvmove demo`: a temporary lab, a plan of moves run through Prefect, and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hvmove.cli.app import JsonOpt, app, friendly, prefect_api, print_json, ui
from hvmove.cli.moves import precheck_all, validated
from hvmove.cli.render import out, plain, print_moves, print_precheck_summary


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


def _run_demo(lab_dir: Path, say: Any, show_tables: bool) -> list[dict[str, Any]]:
    from flows.batch import run_sequentially
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
        cfg, moves = validated(lab_dir / "hvmove.yaml", write_demo_plan(lab_dir / "plan.yaml"))
        if show_tables:
            print_precheck_summary(precheck_all(cfg, moves))
        else:
            precheck_all(cfg, moves)

        def progress(row: dict[str, Any]) -> None:
            reason = f" ({row['reason']})" if row["reason"] else ""
            say(plain(f"  {row['vm']}: {row['status']}{reason}"))

        results = run_sequentially(cfg, moves, batch="demo", poll_seconds=0.5, on_done=progress)
        by_name = {vm.name: vm for vm in server.estate.data.vms}
        rows = []
        for r in results:
            vm = by_name[r["vm"]]
            lost = server.engine.lost_writes(vm.id)["lost"] if vm.state == "Running" else 0
            rows.append(move_row(r, lost))
        return rows
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
        rows = _run_demo(lab_dir, say, show_tables=not as_json)
    finally:
        if not keep:
            shutil.rmtree(lab_dir, ignore_errors=True)
    ok = _as_expected(rows)
    seconds = time.monotonic() - t0
    if as_json:
        print_json({"moves": rows, "ok": ok, "seconds": round(seconds, 1), "prefect_ui": ui(api)})
    else:
        print_moves(rows)
        say(
            f"{'all moves ended as expected' if ok else 'UNEXPECTED OUTCOME'} in "
            f"{seconds:,.0f} s; runs, logs and artifacts: {ui(api)}/runs"
            + (f"; lab kept in {plain(lab_dir)}" if keep else "")
        )
    if not ok:
        raise typer.Exit(1)
