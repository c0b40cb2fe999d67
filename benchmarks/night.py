"""A night in the lab: hvmove's nightly flow against an upper bound and against the loop admins
run today, on the same generated estate and window (``night_estate.py`` describes the estate).

- bound: an upper bound on the bytes of the copies any schedule could complete in the window
  under the lab's own bandwidth model (per-host limits ignored), computed offline from the
  estate: the best set of copies that each fit the window alone and together fit every volume,
  array and offload capacity (a 0/1 program; ``night_estate.bound``); the LP relaxation, which
  also counts parts of copies, is printed beside it;
- hvmove: the ``nightly-migrations`` flow, called as the deployment calls it (plan file, config,
  window, time zone) ``--lead`` seconds (90) before its window as the deployment's
  ``start_ahead_minutes`` does, on a local Prefect server, with the lab in its own process and a
  generated history in the store to learn from. Bytes moved in the window, overruns (copies
  running at the window's end or cancelled for it), ETA error (median of actual over planned
  P50 time, both from the move's start, its run's own startup included) and P90 coverage (share
  of finished moves whose copy ended before their planned P90 finish);
- FIFO: a fresh copy of the same estate; per host, ``MaximumStorageMigrations`` moves at a time in
  plan order, started whenever a slot frees until the window ends, no admission.

    python benchmarks/night.py [--seed 1] [--minutes 3] [--prefect-db URL]

``--prefect-db`` runs the Prefect server on PostgreSQL, as README's production set-up does (as
root on Debian, ``--prefect-db "$(bash .ci/postgres.sh)"``); without it, Prefect's default SQLite,
whose locked file made one start-up in three take 2-15 s mid-night (seed 1; at most 1.2 s on
PostgreSQL), lab minutes of a night sped up 120 times.

Last line: night_bytes/bound=R1 overruns=N fifo_bytes/bound=R2 fifo_overruns=M p90_coverage=C
(goal: R1 >= 0.85, N = 0, C >= 0.9, R2 < R1 and M > N).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import night_estate  # noqa: E402

TiB = 1024**4


def _config(lab: Path, probe_mib: int) -> Path:
    from hvmove.lab.process import write_config

    path = write_config(lab)
    # per-volume limits high enough that the bandwidth model, not a slot count, decides
    path.write_text(
        path.read_text(encoding="utf-8")
        + f"defaults:\n  probe_mib: {probe_mib}\n  moves_per_source_volume: 8\n"
        "  moves_per_destination_volume: 8\n",
        encoding="utf-8",
    )
    return path


def _jobs(lab: Path) -> dict[str, dict[str, Any]]:
    from hvmove.lab.control import LabControl

    out = {}
    for j in LabControl(lab).call("jobs", timeout=30)["jobs"]:
        start = datetime.fromisoformat(j["start_time"])
        j["start"] = start
        j["end"] = start + timedelta(seconds=j["elapsed_seconds"])
        out[j["vm_id"].lower()] = j
    return out


def _tally(
    jobs: dict[str, dict[str, Any]], moves: list[night_estate.Move], end: datetime
) -> tuple[int, int]:
    """Bytes of copies completed by the window end, and copies running past it or cancelled."""
    size = {m.vm_id.lower(): m.bytes for m in moves}
    moved = overruns = 0
    for vm_id, j in jobs.items():
        running_at_end = j["start"] < end and (
            j["job_state"] in ("New", "Starting", "Running") or j["end"] > end
        )
        if j["job_state"] == "Completed" and j["end"] <= end:
            moved += size.get(vm_id, 0)
        elif running_at_end or j["job_state"] == "Terminated":
            overruns += 1
    return moved, overruns


def _window(lead_s: float, minutes: int) -> tuple[str, datetime, datetime]:
    """The first whole-minute window at least ``lead_s`` away (a window is given in HH:MM)."""
    start = datetime.now(UTC) + timedelta(seconds=lead_s)
    if start.second or start.microsecond:
        start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = start + timedelta(minutes=minutes)
    return f"{start:%H:%M}-{end:%H:%M}", start, end


def run_hvmove(args: argparse.Namespace, lab: Path) -> dict[str, Any]:
    from flows.nightly import nightly
    from hvmove.config import load
    from hvmove.lab import process
    from hvmove.lab.history import generate_history

    estate, moves = night_estate.build(lab, args.seed, args.minutes, args.host_limit)
    (lab / "plan.yaml").write_text(night_estate.plan_text(moves), encoding="utf-8")
    process.up(lab)  # writes hvmove.yaml with the hosts' ports
    try:
        cfg_path = _config(lab, args.probe_mib)
        # the store already knows past nights: the planner learns its rates from them
        generate_history(load(cfg_path).store_url(), days=30, seed=args.seed, lab_estate=estate)
        text, start, end = _window(args.lead, args.minutes)
        # the night starts exactly `lead` before its window, as a deployment scheduled that far
        # ahead does: a lead of 20-80 s by the clock's minute made seeds differ run to run
        time.sleep(
            max(0.0, (start - timedelta(seconds=args.lead) - datetime.now(UTC)).total_seconds())
        )
        print(f"hvmove: window {text} UTC; prechecks first", flush=True)
        state = nightly(
            plan=str(lab / "plan.yaml"),
            config=str(cfg_path),
            window=text,
            margin_minutes=args.margin_s / 60,
            poll_seconds=1.0,
            return_state=True,
        )
        summary = state.result(raise_on_failure=False)
        jobs = _jobs(lab)
    finally:
        process.down(lab)
    moved, overruns = _tally(jobs, moves, end)
    if args.dump:
        _dump(args.dump, estate, moves, jobs, summary, start, end)
    ratios, covered = [], []
    for m in summary["moved"]:
        vm_id = next(x.vm_id.lower() for x in moves if x.vm == m["vm"])
        job = jobs.get(vm_id)
        if job is None or not m.get("planned_p50_s"):
            continue
        # like for like: the plan's P50 counts from the move's start (its run's startup, then
        # the copy), so the actual does too, to the end of the lab's copy job
        p90_finish = datetime.fromisoformat(m["planned_finish_p90"])
        started = p90_finish - timedelta(seconds=m["planned_p90_s"])
        ratios.append((job["end"] - started).total_seconds() / m["planned_p50_s"])
        covered.append(job["end"] <= p90_finish)
    return {
        "bytes": moved,
        "overruns": overruns,
        "moves": len(summary["moved"]),
        "deferred": len(summary["deferred"]),
        "failed": len(summary["failed"]),
        "eta_ratio": statistics.median(ratios) if ratios else float("nan"),
        "p90_coverage": sum(covered) / len(covered) if covered else float("nan"),
        "failures": summary["failed"][:3],
    }


def _dump(
    path: str,
    estate: Any,
    moves: list[night_estate.Move],
    jobs: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    start: datetime,
    end: datetime,
) -> None:
    """Per move: what the lab did (its job), what the night planned, and the move's demand
    alone and resources under the lab's model: the raw material of a loss profile."""
    routes = [(m.vm_id, *night_estate.route_of(estate, m)) for m in moves]
    copies, caps = night_estate._resources(estate, routes)
    rows = {r["vm"]: r for r in summary["moved"]}
    out = []
    for m, c in zip(moves, copies, strict=True):
        j = jobs.get(m.vm_id.lower())
        r = rows.get(m.vm, {})
        out.append(
            {
                "vm": m.vm,
                "host": m.host,
                "bytes": m.bytes,
                "demand": c.demand,
                "resources": list(c.resources),
                "job_start": j["start"].isoformat() if j else None,
                "job_end": j["end"].isoformat() if j else None,
                "job_state": j["job_state"] if j else None,
                "status": "moved" if r else None,
                # the night's summary has the plan's P90 finish and duration: their difference
                # is when the night started the move
                "started_at": (
                    (
                        datetime.fromisoformat(r["planned_finish_p90"])
                        - timedelta(seconds=r["planned_p90_s"])
                    ).isoformat()
                    if r.get("planned_finish_p90") and r.get("planned_p90_s") is not None
                    else None
                ),
                "planned_p50_s": r.get("planned_p50_s"),
                "planned_p90_s": r.get("planned_p90_s"),
                "planned_finish_p90": r.get("planned_finish_p90"),
                "copy_seconds": r.get("copy_seconds"),
            }
        )
    data = {
        "window": [start.isoformat(), end.isoformat()],
        "caps": caps,
        "moves": out,
        "deferred": summary["deferred"],
    }
    Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _fifo_host(
    client: Any, queue: list[night_estate.Move], limit: int, end: datetime, stop: threading.Event
) -> None:
    from hvmove.errors import HvmoveError

    mine: list[str] = []
    for move in queue:
        while datetime.now(UTC) < end and not stop.is_set():
            running = 0
            for vm_id in mine:
                job = client.move_status(vm_id).job
                running += 1 if job is not None and job.running else 0
            if running < limit:
                break
            time.sleep(0.5)
        if datetime.now(UTC) >= end or stop.is_set():
            return
        try:
            client.start_move(move.vm_id, "all", destination=move.destination, keep_source=False)
            mine.append(move.vm_id)
        except HvmoveError:
            time.sleep(0.5)  # the host refused (its own limit): the loop goes on with the next


def run_fifo(args: argparse.Namespace, lab: Path) -> dict[str, Any]:
    from hvmove.config import load
    from hvmove.hyperv.client import open_client
    from hvmove.lab import process

    _estate, moves = night_estate.build(lab, args.seed, args.minutes, args.host_limit)
    process.up(lab)
    try:
        cfg = load(_config(lab, args.probe_mib))
        start = datetime.now(UTC) + timedelta(seconds=2)
        end = start + timedelta(minutes=args.minutes)
        clients = {h.name: open_client(cfg, h.name) for h in cfg.hosts}
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_fifo_host,
                args=(clients[h], [m for m in moves if m.host == h], args.host_limit, end, stop),
                daemon=True,
            )
            for h in clients
        ]
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
        print(f"fifo: window {start:%H:%M:%S}-{end:%H:%M:%S} UTC", flush=True)
        for t in threads:
            t.start()
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1.0)
        stop.set()
        jobs = _jobs(lab)
        for m in moves:  # the night is over: stop what still runs (the tally is taken)
            j = jobs.get(m.vm_id.lower())
            if j is not None and j["job_state"] in ("New", "Starting", "Running"):
                clients[m.host].stop_move(m.vm_id)
        for c in clients.values():
            c.close()
    finally:
        process.down(lab)
    moved, overruns = _tally(jobs, moves, end)
    return {"bytes": moved, "overruns": overruns}


@contextlib.contextmanager
def _prefect_database(url: str | None) -> Iterator[str]:
    """The database the run's Prefect server keeps its runs in: Prefect's default SQLite, or a
    PostgreSQL database made for this run on the server ``url`` names (its role needs CREATEDB)
    and dropped afterwards, as README's production set-up recommends: on SQLite the server
    answers slowly while the file is locked, and a few seconds' wait to start a move is a
    lab minute of a night sped up 120 times."""
    if not url:
        yield "SQLite"
        return
    from sqlalchemy.engine import make_url

    given = make_url(url)
    name = f"hvmove_night_{os.getpid()}_{int(time.time())}"
    # the password stays in URLs handed to the drivers and the server's environment, never printed
    admin = given.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_postgres(admin, f'CREATE DATABASE "{name}"'))
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = given.set(
        drivername="postgresql+asyncpg", database=name
    ).render_as_string(hide_password=False)
    try:
        yield f"PostgreSQL ({given.host}:{given.port}, database {name}, dropped after the run)"
    finally:
        os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        asyncio.run(_postgres(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _postgres(dsn: str, statement: str) -> None:
    import asyncpg  # Prefect's own PostgreSQL driver: installed with it

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def _own_prefect_server(home: Path) -> Iterator[None]:
    """A Prefect server of this run's own, stopped at the end: a shared one can be stopped or
    loaded by someone else in the middle of the night."""
    from hvmove.prefect_local import ensure_server

    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_HOME"] = str(home)  # no profile of anyone else's names another API
    ensure_server(home=home, port=0)  # before Prefect is imported: it reads the URL once
    try:
        yield
    finally:
        pid = json.loads((home / "server.json").read_text())["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # its own session: the server and its workers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=int, default=3, help="the window, in lab minutes")
    ap.add_argument("--host-limit", type=int, default=4, help="MaximumStorageMigrations")
    ap.add_argument(
        "--lead",
        type=float,
        default=90,
        help="seconds the night starts before its window (its prechecks, its first moves' "
        "start-ups: real seconds the time-scaled window does not shrink)",
    )
    ap.add_argument("--margin-s", type=float, default=6.0, help="the window's safety margin")
    ap.add_argument(
        "--probe-mib", type=int, default=4096, help="probe size (lab rates are sped up too)"
    )
    ap.add_argument(
        "--prefect-db",
        metavar="URL",
        help="run the Prefect server on a fresh database on this PostgreSQL server (a role with "
        'CREATEDB; as root on Debian: --prefect-db "$(bash .ci/postgres.sh)"); default SQLite',
    )
    ap.add_argument("--skip-fifo", action="store_true")
    ap.add_argument("--dump", help="write per-move planned and actual figures (JSON) here")
    args = ap.parse_args()
    with (
        _prefect_database(args.prefect_db) as database,
        tempfile.TemporaryDirectory() as tmp,
        _own_prefect_server(Path(tmp) / "prefect"),
    ):
        print(f"Prefect server database: {database}", flush=True)
        lab = Path(tmp) / "bound"
        estate, moves = night_estate.build(lab, args.seed, args.minutes, args.host_limit)
        total = sum(m.bytes for m in moves)
        bound, lp, how = night_estate.bound(estate, moves, args.minutes * 60)
        shutil.rmtree(lab)
        print(
            f"estate: {len(estate.data.hosts)} hosts, {len(estate.data.volumes)} volumes, "
            f"{len(moves)} VMs, {total / TiB:,.1f} TiB to move; bound {bound / TiB:,.1f} TiB "
            f"({how}; LP relaxation {lp / TiB:,.1f} TiB); everything / bound = "
            f"{total / bound:.2f}",
            flush=True,
        )
        hv = run_hvmove(args, Path(tmp) / "hvmove")
        print(
            f"hvmove: {hv['bytes'] / TiB:,.1f} TiB in {hv['moves']} moves, {hv['deferred']} "
            f"deferred, {hv['failed']} failed, overruns {hv['overruns']}, ETA actual/predicted "
            f"median {hv['eta_ratio']:.2f}, P90 coverage {hv['p90_coverage']:.2f}, "
            f"bytes/LP relaxation {hv['bytes'] / lp:.3f}",
            flush=True,
        )
        for f in hv["failures"]:
            print(f"  failed: {f['vm']}: {f['reason'][:160]}")
        fifo = {"bytes": 0, "overruns": 0}
        if not args.skip_fifo:
            fifo = run_fifo(args, Path(tmp) / "fifo")
            print(f"fifo: {fifo['bytes'] / TiB:,.1f} TiB, overruns {fifo['overruns']}", flush=True)
    print(
        f"night_bytes/bound={hv['bytes'] / bound:.3f} overruns={hv['overruns']} "
        f"fifo_bytes/bound={fifo['bytes'] / bound:.3f} fifo_overruns={fifo['overruns']} "
        f"p90_coverage={hv['p90_coverage']:.2f}"
    )


if __name__ == "__main__":
    main()
