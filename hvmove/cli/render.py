"""Rich rendering for the CLI. Every name, path and message from the estate, a plan or a host is
passed through ``plain`` first: Rich reads ``[...]`` as markup, and a VM called ``web [prod]``
must print as written, not as ``web``."""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# piped output is not wrapped at 80 columns: tables stay readable in logs and CI; no emoji codes
# (a VM called ':fire:' prints as written)
out = Console(width=None if sys.stdout.isatty() else 150, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150, emoji=False)

# Rich's own markup grammar (rich.markup.RE_TAGS): only these brackets open a tag
_TAG = re.compile(r"\[[a-z#/@][^[]*?]")
_TAG_WITH_ESCAPES = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
_BEFORE_BRACKET = re.compile(r"(\\+)(?=\[)")

GiB = 1024**3
_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def plain(value: object) -> str:
    """VALUE as literal text inside Rich markup, whatever markup stands around it.

    rich.markup.escape is not exact for Windows paths: it drops the backslash of `\\[` and
    doubles a trailing one (`E:\\` printed `E:\\\\`). Rich removes one backslash before a
    bracket that opens no tag, and halves a run before one that does; a trailing run is closed by
    an empty span so that markup after it is not escaped. Checked exhaustively in
    tests/test_render_plain.py."""
    text = "" if value is None else str(value)
    text = _BEFORE_BRACKET.sub(
        lambda m: m.group(1) if _TAG.match(text, m.end()) else m.group(1) + "\\", text
    )
    text = _TAG_WITH_ESCAPES.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)
    trail = re.search(r"\\+$", text)
    return text + trail.group(0) + "[r][/r]" if trail else text


def gib(n: int | float) -> str:
    return f"{n / GiB:,.1f}"


def table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    t = Table(title=plain(title), title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold", justify="right" if col in right else "left")
    return t


def print_inventory(hosts: list[Any]) -> None:
    for h in hosts:
        if h.error:
            continue
        f = h.facts
        out.rule(
            f"[bold]{plain(h.name)}[/]  {plain(f.os_caption)}  max storage moves "
            f"{f.maximum_storage_migrations}  running {f.running_storage_moves}"
        )
        vt = table(
            "volumes",
            ["volume", "kind", "fs", "capacity GiB", "free GiB", "used %"],
            right=("capacity GiB", "free GiB", "used %"),
        )
        for v in h.volumes:
            used = 100 * (1 - v.free / v.capacity) if v.capacity else 0
            vt.add_row(
                plain(v.volume),
                v.kind,
                plain(v.file_system),
                gib(v.capacity),
                gib(v.free),
                f"{used:.0f}",
            )
        out.print(vt)
        cols = ["name", "state", "disks", "on disk GiB", "virtual GiB", "checkpoints", "notes"]
        t = table("VMs", [*cols, "location"], right=tuple(cols[2:6]))
        for vm in h.vms:
            t.add_row(
                plain(vm.name),
                plain(vm.state),
                str(len(vm.drives)),
                gib(sum(x.file_size for x in vm.vhd_files())),
                gib(sum(d.chain[0].size for d in vm.drives if d.chain)),
                str(len(vm.checkpoints)),
                plain(", ".join(_vm_notes(vm))),
                plain(vm.configuration_location),
            )
        out.print(t)


def _vm_notes(vm: Any) -> list[str]:
    notes = []
    if vm.dvd_paths:
        notes.append("ISO")
    if any(d.pass_through for d in vm.drives):
        notes.append("pass-through")
    if any(d.shared for d in vm.drives):
        notes.append("shared VHDX")
    if vm.secondary_status:
        notes.append(vm.secondary_status)
    return notes


def print_checks(r: Any) -> None:
    t = table(f"{r.vm} on {r.host} -> {r.destination}", ["check", "result", "detail", "remedy"])
    for c in r.checks:
        t.add_row(
            c.name, f"[{_STYLE[c.status]}]{c.status.upper()}[/]", plain(c.detail), plain(c.remedy)
        )
    out.print(t)


def print_precheck_summary(reports: list[Any]) -> None:
    from hvmove.prechecks import duration

    t = table("plan", ["vm", "host", "destination", "GiB", "ETA", "ODX", "left after", "result"])
    for r in reports:
        space = [c.numbers for c in r.checks if c.name == "space"]
        left = ", ".join(f"{n['volume']} {max(0, n['free_after']) / GiB:,.0f} GiB" for n in space)
        result = (
            "[green]already there[/]"
            if r.already_done
            else "[green]ready[/]"
            if r.ok
            else "[bold red]blocked[/]: " + plain("; ".join(c.name for c in r.failures()))
        )
        t.add_row(
            plain(r.vm),
            plain(r.host),
            plain(r.destination),
            gib(r.bytes_to_copy),
            duration(r.eta_seconds),
            {True: "yes", False: "no", None: "?"}[r.odx],
            plain(left),
            result,
        )
    out.print(t)


def print_schedule(sched: Any, others: list[tuple[str, str, str, str]], win: Any) -> None:
    """`hvmove plan`'s table: admitted moves with start and P90 finish, then the OTHERS as
    (vm, host, status markup, note)."""
    zone = win.start.tzinfo
    t = table(
        f"window {win.start:%Y-%m-%d %H:%M} - {win.end:%Y-%m-%d %H:%M} {zone}",
        ["vm", "host", "GiB", "ODX", "start", "finish P90", "note"],
    )
    for m in sched.admitted:
        t.add_row(
            plain(m.vm),
            plain(m.host),
            gib(m.bytes),
            "yes" if m.odx else "no",
            f"{m.start.astimezone(zone):%H:%M:%S}",
            f"{m.finish_p90.astimezone(zone):%H:%M:%S}",
            "",
        )
    for vm, host, label, note in others:
        t.add_row(plain(vm), plain(host), "", "", label, "", plain(note))
    out.print(t)
    out.print(
        f"{len(sched.admitted)} move(s), {gib(sched.bytes_admitted)} GiB, last P90 "
        f"finish after {sched.makespan_seconds / 3600:,.2f} h"
    )


def print_summary(summary: dict[str, Any]) -> None:
    """A night's outcome, one row a move."""
    t = table("night", ["vm", "host", "result", "GiB", "copy s", "why"])
    for m in summary["moved"]:
        t.add_row(
            plain(m["vm"]),
            plain(m["host"]),
            "[green]moved[/]",
            gib(m["bytes"] or 0),
            f"{m['seconds'] or 0:,.1f}",
            "",
        )
    for key, label in (
        ("deferred", "[yellow]deferred[/]"),
        ("blocked", "[yellow]blocked[/]"),
        ("cancelled", "[yellow]cancelled[/]"),
        ("failed", "[red]failed[/]"),
    ):
        for m in summary.get(key, []):
            t.add_row(plain(m["vm"]), plain(m["host"]), label, "", "", plain(m["reason"]))
    out.print(t)
    out.print(
        f"{len(summary['moved'])} moved, {gib(summary['bytes'])} GiB, mean "
        f"{summary['mean_mbps'] or 0:,.0f} MB/s"
    )


def print_moves(rows: list[dict[str, Any]]) -> None:
    """The demo's result table (one row a move, from `move_row`)."""
    cols = ["vm", "host", "status", "GiB", "copy s", "verified", "source removed"]
    if rows and "lost_writes" in rows[0]:
        cols.append("lost writes")
    t = table("moves", [*cols, "reason"])
    colour = {"completed": "green", "blocked": "yellow", "failed": "bold red"}
    for r in rows:
        cells = [
            plain(r["vm"]),
            plain(r["host"]),
            f"[{colour.get(r['status'], 'white')}]{plain(r['status'])}[/]",
            gib(r["bytes"]),
            f"{r['seconds']:,.1f}" if r["seconds"] else "-",
            "yes" if r["verified"] else "no",
            "yes" if r["source_removed"] else "no",
        ]
        if "lost_writes" in r:
            cells.append(str(r["lost_writes"]))
        # the table names the failed checks; the details are in the prechecks table and the JSON
        cells.append(plain(", ".join(r["blockers"]) if r.get("blockers") else r["reason"]))
        t.add_row(*cells)
    out.print(t)


def print_history(rows: list[dict[str, Any]], store_url: str) -> None:
    cols = ["finished", "vm", "host", "destination", "status", "GiB", "copy s", "est. s"]
    t = table(f"moves in {store_url}", [*cols, "MB/s", "ODX", "verified"])
    for r in rows:
        mbps = r["bytes"] / r["copy_seconds"] / 1e6 if r["copy_seconds"] else None
        t.add_row(
            (r["finished_at"] or "")[:19],
            plain(r["vm"]),
            plain(r["host"]),
            plain(r["destination"]),
            plain(r["status"]),
            gib(r["bytes"]),
            f"{r['copy_seconds']:,.1f}" if r["copy_seconds"] else "-",
            f"{r['estimated_seconds']:,.1f}" if r["estimated_seconds"] else "-",
            f"{mbps:,.0f}" if mbps else "-",
            str(r["odx"]),
            str(r["verified"]),
        )
    out.print(t)
