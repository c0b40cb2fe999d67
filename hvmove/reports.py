"""Pure renderers of what a move and a night did: markdown reports, the night's summary and the
verdict its final state carries. No Prefect here: the flows publish what these return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hvmove import runinfo
from hvmove.store import STEPS, MoveRecord

GiB = 1024**3


def move_markdown(r: MoveRecord, states: dict[str, str]) -> str:
    """The report at the end of a move: what was checked, moved, verified, removed."""
    lines = [
        f"# Move of {r.vm_name} on {r.host}",
        "",
        f"**Status:** {r.status}" + (f" - {r.reason}" if r.reason else ""),
        "",
        f"Destination: `{r.destination}`  ",
        f"Bytes: {(r.bytes_total or 0) / GiB:,.1f} GiB  ",
        f"Copy: {r.copy_seconds or 0:,.1f} s (estimated {r.estimated_seconds or 0:,.1f} s), "
        f"ODX: {r.odx}  ",
        "",
        "| step | state |",
        "|---|---|",
    ]
    lines += [f"| {s} | {states.get(s, 'not run')} |" for s in STEPS]
    if r.precheck:
        lines += ["", "## Prechecks", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['status']} | {c['detail']} |" for c in r.precheck["checks"]]
    if r.verification:
        lines += [
            "",
            "## Verification",
            "",
            "| disk | Test-VHD | same identity and size |",
            "|---|---|---|",
        ]
        for d in r.verification["disks"]:
            same = all((d.get("same") or {}).values()) if d.get("same") else "n/a"
            lines.append(f"| `{d['path']}` | {d['test_vhd']} | {same} |")
        lines.append(f"\nHeartbeat: {r.verification['heartbeat']}")
        lines += _parent_lines(r.verification.get("parents") or [])
    if r.cleanup:
        lines += _cleanup_lines(r.cleanup)
    return "\n".join(lines)


def _parent_lines(parents: list[dict[str, Any]]) -> list[str]:
    """Where each parent of the VM's disks is after the move, as the child's ParentPath says:
    whether Hyper-V carries a parent no drive attaches is not documented (hvmove.layout)."""
    if not parents:
        return []
    lines = ["", "Parents of the VM's disks (where each child's ParentPath points now):", ""]
    for p in parents:
        if p["moved"]:
            lines.append(f"- `{p['source']}`: moved to `{p['now']}`")
        else:
            where = "left in place" if p["now"] else "not found along the child's chain"
            lines.append(f"- `{p['source']}`: {where}")
    return lines


def _cleanup_lines(c: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Cleanup",
        "",
        f"Removed: {len(c['removed'])} file(s), {len(c['folders_removed'])} folder(s); kept: "
        + (", ".join(f"`{k['path']}` ({k['reason']})" for k in c["folders_kept"]) or "nothing"),
    ]
    if c.get("kept"):
        lines += ["", "Source files kept because a VM uses them, or might (see each reason):", ""]
        lines += [f"- `{k['path']}`: {k['reason']}" for k in c["kept"]]
    if c.get("asked"):
        lines.append(f"\nHosts asked before deleting: {', '.join(c['asked'])}")
    return lines


# -- the night ------------------------------------------------------------------------------------
SECTIONS = (
    ("Moved", "moved"),
    ("Deferred", "deferred"),
    ("Blocked", "blocked"),
    ("Cancelled", "cancelled"),
    ("Failed", "failed"),
)


PLANNED = ("planned_p50_s", "planned_p90_s", "planned_finish_p90")


def night_summary(
    *,
    window: tuple[str, str],
    results: list[dict[str, Any]],
    deferred: list[dict[str, str]],
    blocked: list[dict[str, str]],
    already_done: list[str],
    planned_makespan_s: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The night as data: each move's store row sorted into moved / cancelled / failed."""
    # 'verified': moved and verified, its source kept until the cleanup is approved
    moved = [r for r in results if r["status"] in ("completed", "verified")]
    cancelled = [r for r in results if r["status"] == "cancelled"]
    failed = [r for r in results if r["status"] not in ("completed", "verified", "cancelled")]
    seconds = sum(r.get("copy_seconds") or 0 for r in moved)
    total = sum(r.get("bytes") or 0 for r in moved)

    def why(r: dict[str, Any]) -> dict[str, str]:
        reason = r.get("reason") or r.get("message", "")
        return {"vm": r["vm"], "host": r["host"], "reason": reason, "url": r.get("url") or ""}

    return {
        "window": list(window),
        "moved": [
            {
                "vm": r["vm"],
                "host": r["host"],
                "bytes": r.get("bytes"),
                "seconds": r["copy_seconds"],
                "awaiting_approval": r["status"] == "verified",
                # the plan's expectation, when a night planned it: ETA accuracy and P90 coverage
                **{k: r[k] for k in PLANNED if k in r},
                "url": r.get("url") or "",
            }
            for r in moved
        ],
        "failed": [why(r) for r in failed],
        "cancelled": [why(r) for r in cancelled],
        "deferred": deferred,
        "blocked": blocked,
        "already_done": already_done,
        "bytes": total,
        "mean_mbps": round(total / seconds / 1e6, 1) if seconds else None,
        "planned_makespan_s": planned_makespan_s,
        "error": error,
    }


@dataclass(frozen=True)
class Verdict:
    """What the night's final state says: its type, its name in the UI, its message."""

    kind: Literal["completed", "failed"]
    name: str
    message: str
    exit_code: int  # `hvmove migrate`: 0 all admitted completed, 2 some waited, 1 any failed


def night_verdict(summary: dict[str, Any]) -> Verdict:
    counts = {key: len(summary.get(key) or []) for _, key in SECTIONS}
    tally = ", ".join(f"{n} {key}" for key, n in counts.items() if n) or "nothing to do"
    if summary.get("error"):
        return Verdict("failed", "Failed", f"the night stopped: {summary['error']} ({tally})", 1)
    if counts["failed"]:
        names = ", ".join(f"{m['vm']} on {m['host']}" for m in summary["failed"][:5])
        return Verdict(
            "failed", "Failed", f"{counts['failed']} move(s) failed ({names}); {tally}", 1
        )
    waiting = [(key, counts[key]) for key in ("blocked", "deferred", "cancelled") if counts[key]]
    if waiting:
        name = "Completed with " + ", ".join(f"{n} {key}" for key, n in waiting)
        return Verdict("completed", name, tally, 2)
    return Verdict("completed", "Completed", tally, 0)


def night_markdown(summary: dict[str, Any], batch_id: str) -> str:
    lines = [
        f"# Night {batch_id}",
        "",
        f"**{night_verdict(summary).name}**"
        + (f": {summary['error']}" if summary["error"] else ""),
        "",
        f"Window {summary['window'][0]} - {summary['window'][1]}  ",
        f"Moved {len(summary['moved'])} VM(s), {summary['bytes'] / GiB:,.1f} GiB, mean "
        f"{summary['mean_mbps'] or 0:,.0f} MB/s",
        "",
    ]
    for title, key in SECTIONS:
        lines += [f"## {title} ({len(summary[key])})", ""]
        for item in summary[key]:
            extra = (
                f"{(item.get('bytes') or 0) / GiB:,.1f} GiB in {item.get('seconds') or 0:,.0f} s"
                + (
                    "; source kept, awaiting cleanup approval"
                    if item.get("awaiting_approval")
                    else ""
                )
                if key == "moved"
                else item.get("reason", "")
            )
            vm = (
                f"[{runinfo.md_text(item['vm'])}]({item['url']})" if item.get("url") else item["vm"]
            )
            lines.append(f"- **{vm}** on {item['host']}: {extra}")
        lines.append("")
    return "\n".join(lines)
