"""The approval gate before the one irreversible step: with `cleanup: approve` in hvmove.yaml a
verified move stops with its source kept, recorded as `verified, awaiting cleanup approval`, until
someone approves it in the cleanup-approval flow's form. Pure: the form and the suspend are
Prefect's (flows/cleanup_approval.py)."""

from __future__ import annotations

from typing import Any

from hvmove.store import MoveRecord, Store

STATUS = "verified"
REASON = "awaiting cleanup approval"
APPROVE_ALL = "approve_all_verified"


def hold(store: Store, move_id: str) -> None:
    """Stop a verified move before its cleanup; the source copies stay where they are."""
    record = store.get(move_id)
    if not record.verified:  # the gate is only ever reached after verification passed
        raise ValueError(f"move {move_id} is not verified; it cannot await cleanup approval")
    store.finish(move_id, STATUS, REASON)


def awaiting(store: Store) -> list[MoveRecord]:
    """Moves verified and waiting for cleanup approval, oldest first."""
    return sorted(
        (r for r in store.moves() if r.status == STATUS and r.reason == REASON and r.verified),
        key=lambda r: r.created_at,
    )


def field_name(move_id: str) -> str:
    """The form field of one move: an identifier whatever the VM is called."""
    return "move_" + move_id.replace("-", "")


def label(r: MoveRecord) -> str:
    return f"{r.vm_name} on {r.host} -> {r.destination}"


def sources(r: MoveRecord) -> list[str]:
    """The source copies the cleanup would delete (what the approver is asked about)."""
    return list(((r.before or {}).get("vhds") or {}).keys())


def rows(records: list[MoveRecord]) -> list[dict[str, Any]]:
    """The table the approver reads before ticking boxes."""
    return [
        {
            "vm": r.vm_name,
            "host": r.host,
            "destination": r.destination,
            "GiB": round((r.bytes_total or 0) / 1024**3, 1),
            "verified at": r.finished_at.isoformat(timespec="minutes") if r.finished_at else "",
            "source files to delete": "; ".join(sources(r)),
            "form field": field_name(r.id),
        }
        for r in records
    ]


def approved(records: list[MoveRecord], answer: dict[str, Any]) -> list[MoveRecord]:
    """The moves the answer approves, among those still waiting (a move approved in an older
    form and cleaned up since, or no longer waiting, is not touched again)."""
    if answer.get(APPROVE_ALL):
        return list(records)
    return [r for r in records if answer.get(field_name(r.id)) is True]
