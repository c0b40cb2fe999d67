"""Cancel = stop the copy: Stop-StorageMove on the move's job, the VM stays on its source, the
partial destination goes, the record says cancelled. A job past the point where Hyper-V accepts a
cancel (it is switching, or Hyper-V refuses the stop: 32775) is left to finish: the record stays
open, its reason says so, and the next run verifies it.

Everything is rebuilt from the store and the host, because a cancel is handled in a fresh
process (Prefect runs on_cancellation hooks after it killed the flow run's process)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from hvmove import pipeline
from hvmove.config import Config
from hvmove.hyperv.client import HostClient, open_client
from hvmove.layout import layout
from hvmove.models import MoveRequest, MoveStop
from hvmove.moves import follow
from hvmove.store import MoveRecord, Store

Outcome = Literal["cancelled", "left_to_finish", "finished", "not_running"]

# An open record whose reason starts with this: hvmove asked Hyper-V to stop its job (an
# operator's cancel, the window's end). When the job then ends Terminated, whoever follows it
# records the move `cancelled` with that reason instead of `failed` (tasks/copy.py).
STOP_ASKED = "stop asked: "
# An open record whose reason starts with this: Hyper-V refused the stop; the job finishes and
# the next run verifies it (the record stays open, so that run resumes it).
LEFT_TO_FINISH = "cancel refused, left to finish: "
_NEXT = "the next run verifies and cleans up"


@dataclass(frozen=True)
class Cancelled:
    outcome: Outcome
    detail: str


def stop_asked(record: MoveRecord) -> str | None:
    """Why hvmove asked the move's job to stop, when it did and the move is still open."""
    if record.status in ("pending", "running") and record.reason.startswith(STOP_ASKED):
        return record.reason[len(STOP_ASKED) :]
    return None


def _left(store: Store, move_id: str, reason: str, detail: str) -> Cancelled:
    """Past the point of no return: say so in the still-open record (not `cancelled`)."""
    store.update(move_id, reason=f"{LEFT_TO_FINISH}{reason}: {detail}")
    return Cancelled("left_to_finish", detail)


def stop_move(
    client: HostClient, store: Store, move_id: str, reason: str, *, wait_s: float = 120.0
) -> Cancelled:
    record = store.get(move_id)
    if record.status not in ("pending", "running"):
        return Cancelled("not_running", f"the move is already {record.status}")
    vm_id = record.vm_id
    job = client.move_status(vm_id).job
    if job is not None and job.running:
        if not job.cancellable:
            return _left(
                store,
                move_id,
                reason,
                f"the job is at {job.percent_complete}% and switching: Hyper-V no longer "
                f"accepts a cancel; {_NEXT}",
            )
        stop = _ask_stop(client, store, record, reason, vm_id)
        if not stop.requested and stop.return_value is not None:
            # Hyper-V said no (32775, invalid state: Cancellable "does not guarantee the cancel
            # succeeds", msvm-migrationjob); the job copies on, so say that, not "stopped"
            return _left(store, move_id, reason, _refused(stop))
        job = follow(client, vm_id, poll_s=0.5, timeout_s=wait_s)
        if job is not None and job.running:
            return _left(
                store, move_id, reason, f"the job did not stop within {wait_s:.0f} s; {_NEXT}"
            )
    request = MoveRequest.model_validate(record.request)
    remaining = layout(request, pipeline.vm_info(client, vm_id))
    if not (remaining.vhds or remaining.configuration):
        store.update(move_id, reason="")  # switched after all: the next run verifies it
        return Cancelled("finished", "the VM is at its destination; the next run verifies it")
    note = pipeline.remove_own_leftovers(client, record) if record.job_id else ""
    store.finish(move_id, "cancelled", reason)
    return Cancelled("cancelled", f"stopped; {record.vm_name} stays on its source{note}")


def _ask_stop(
    client: HostClient, store: Store, record: MoveRecord | None, why: str, vm_id: str
) -> MoveStop:
    """Stop-StorageMove, with WHY written to the open record first: the run that follows the
    job (another process) then records the Terminated job as cancelled, not failed. The note
    stays when the call fails: the stop may have acted (a non-terminating error), and only a
    job that ends Terminated is called cancelled (settle_stopped)."""
    if record is not None:
        store.update(record.id, reason=STOP_ASKED + why)
    return client.stop_move(vm_id)


def settle_stopped(client: HostClient, store: Store, move_id: str) -> str | None:
    """For the copy step whose job ended badly: when hvmove had asked it to stop and Hyper-V
    ended it Terminated (a cancel, not a failure of its own), record the move `cancelled`
    with the reason asked and return that reason; None otherwise."""
    record = store.get(move_id)
    why = stop_asked(record)
    if why is None:
        return None
    try:
        job = client.move_status(record.vm_id).job
    except Exception:  # unknown: leave the failure as it is, the reason stays in the record
        return None
    if job is None or job.job_state != "Terminated":
        return None
    store.finish(move_id, "cancelled", why)
    return why


def _refused(stop: MoveStop) -> str:
    at = f" at {stop.job.percent_complete}%" if stop.job is not None else ""
    return (
        f"Hyper-V refused the cancel{at} (RequestStateChange returned {stop.return_value}); "
        f"the job goes on to its switch and {_NEXT}"
    )


class OverrunGuard:
    """Stops a move whose own progress says it ends after the hard window end: Hyper-V then
    leaves the VM on its source, and the move is recorded `cancelled` with the reason (the
    store's record says the stop was asked, see STOP_ASKED). Keeps one client per host for the
    night."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(cfg.store_url())
        self.clients: dict[str, HostClient] = {}

    def check(self, host: str, vm_id: str, vm: str, end: datetime, now: datetime) -> str | None:
        """A line for the log when the move was stopped (or Hyper-V refused to); None when it
        fits. Raises what the host said when it could not be asked or the stop failed: the
        caller logs it."""
        client = self.clients.get(host)
        if client is None:
            client = self.clients[host] = open_client(self.cfg, host)
        job = client.move_status(vm_id).job
        if job is None or not job.running or job.percent_complete <= 0:
            return None
        left = job.elapsed_seconds * (100 - job.percent_complete) / job.percent_complete
        finish = now + timedelta(seconds=left)
        if finish <= end:
            return None
        why = (
            f"window overrun: {job.percent_complete}% done, would end "
            f"{finish.isoformat(timespec='seconds')}, after the window ({end.isoformat()})"
        )
        record = self.store.latest(host, vm_id)
        if record is not None and record.status not in ("pending", "running"):
            record = None
        stop = _ask_stop(client, self.store, record, why, vm_id)
        if not stop.requested and stop.return_value is not None:
            if record is not None:
                _left(self.store, record.id, why, _refused(stop))
            return f"could not cancel {vm} on {host} for the {why}: {_refused(stop)}"
        return f"cancelled {vm} on {host}: {why}"

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.clients.clear()
