"""What makes runs findable in the Prefect UI: tags, run names, the night's results table and
its progress line. Pure: the flows apply them (flows/migrate_vm.py, flows/nightly.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from hvmove.names import display

GiB = 1024**3


def move_tags(host: str, vm: str, batch: str | None) -> list[str]:
    """'host:hv02', 'vm:web [prod]', 'batch:night-...': the UI's tag filter takes them as
    written (tags are free text in Prefect); control characters are made visible."""
    tags = [f"host:{display(host)}", f"vm:{display(vm)}"]
    return tags + ([batch_tag(batch)] if batch else [])


def batch_tag(batch: str) -> str:
    return f"batch:{display(batch)}"


def md_text(text: str) -> str:
    """TEXT inside markdown as written: a VM called 'web [prod]' must not open a link."""
    return "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in display(text))


def move_run_name(params: Mapping[str, Any]) -> str:
    """'move web01 on hv01 to E:\\VMs\\web01', from a migrate-vm run's parameters. On a worker
    Prefect hands the validated values (a `vhds` entry is a VhdMapping, not a dict); a run started
    in-process may hand plain dicts: both name the run the same way."""
    first = (params.get("vhds") or [None])[0]
    vhd_dest = (
        first.get("destination")
        if isinstance(first, Mapping)
        else getattr(first, "destination", None)
    )
    dest = params.get("destination") or params.get("virtual_machine_path") or vhd_dest or ""
    return display(f"move {params.get('vm')} on {params.get('host')} to {dest}")


def night_run_name(start: datetime, end: datetime, moves: int) -> str:
    """'night 2026-12-01 22:00-05:00 (12 moves)', in the window's own time zone; a window of a
    day or more names its last day too ('now' windows: '05:55-12-02 05:55')."""
    noun = "move" if moves == 1 else "moves"
    until = f"{end:%H:%M}" if end - start < timedelta(days=1) else f"{end:%m-%d %H:%M}"
    return f"night {start:%Y-%m-%d} {start:%H:%M}-{until} ({moves} {noun})"


def inventory_run_name(at: datetime) -> str:
    return f"inventory {at:%Y-%m-%d %H:%M} {at.tzname() or ''}".rstrip()


def progress_line(finished: int, total: int) -> str:
    return f"{finished} of {total} moves finished"


def results_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per move of the night, for a table artifact the UI can sort and filter."""
    rows = []
    for r in results:
        seconds = r.get("copy_seconds") or 0
        size = r.get("bytes") or 0
        rows.append(
            {
                "vm": r.get("vm"),
                "host": r.get("host"),
                "status": r.get("status"),
                "GiB": round(size / GiB, 1),
                "copy s": round(seconds, 1) if seconds else None,
                "MB/s": round(size / seconds / 1e6, 1) if seconds else None,
                "verified": bool(r.get("verified")),
                "source removed": bool(r.get("source_removed")),
                "reason": r.get("reason") or "",
                "run": r.get("url") or "",
            }
        )
    return rows
