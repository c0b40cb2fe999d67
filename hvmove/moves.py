"""Start a storage move without ever starting a second one, and follow it to its end."""

from __future__ import annotations

import time
from collections.abc import Callable

from hvmove import models
from hvmove.hyperv.client import HostClient
from hvmove.hyperv.errors import MaybeRanError, TransientError


def start_or_attach(
    client: HostClient, vm_id: str, mode: models.MoveMode, *, attempts: int = 3, **kwargs: object
) -> models.MoveStart:
    """Look at the host, then start. A lost reply is answered by looking again, never by a blind
    second start: if the first request did start the move, the host shows its job."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            status = client.move_status(vm_id)
            if status.job is not None and status.job.running:
                return models.MoveStart(
                    vm_id=vm_id,
                    status="already_running",
                    job=status.job,
                    message="attached to the running move",
                )
            return client.start_move(vm_id, mode, **kwargs)  # type: ignore[arg-type]
        except MaybeRanError as exc:
            last = exc  # loop: the next status call tells whether it ran
        except TransientError as exc:
            last = exc
            time.sleep(0.5)
    assert last is not None
    raise last


# How long a host may stay silent while a move is followed, unless the config says otherwise.
DEFAULT_SILENCE_S = 15 * 60.0


class HostSilent(TransientError):
    """The host has not answered for longer than the follow bound: the copy step fails as
    transient, and the job id stays in the store so that a rerun attaches to the job."""


def follow(
    client: HostClient,
    vm_id: str,
    *,
    poll_s: float = 2.0,
    on_progress: Callable[[models.MoveJob], None] | None = None,
    timeout_s: float | None = None,
    silence_s: float = DEFAULT_SILENCE_S,
) -> models.MoveJob | None:
    """Poll Msvm_MigrationJob until the VM's job ends. None when no job is visible any more: it
    finished longer ago than TimeBeforeRemoval, or the host rebooted or VMMS restarted (jobs
    do not survive either), so the caller reads the outcome from the VM's paths. A host that
    does not answer for ``silence_s`` raises HostSilent; ``timeout_s`` ends the wait with the
    job as last seen even while the host answers."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    heard = time.monotonic()
    while True:
        try:
            job = client.move_status(vm_id).job
        except TransientError as exc:
            # a blip says nothing about the job: ask again from a fresh call, never conclude
            # "no job" (that would read as a finished or vanished move); but not for ever
            silent = time.monotonic() - heard
            if silent >= silence_s:
                raise HostSilent(
                    client.name,
                    "following the move",
                    f"host {client.name} has not answered for {silent:,.0f} s while the move of "
                    f"VM {vm_id} was followed (last error: {exc.detail}); the job id is kept, a "
                    "rerun attaches to the job or reads the outcome from the VM",
                ) from exc
            time.sleep(max(0.0, min(poll_s, silence_s - silent)))
            continue
        heard = time.monotonic()
        if job is None:
            return None
        if on_progress is not None:
            on_progress(job)
        if not job.running:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(_next_poll(job, poll_s))


def _next_poll(job: models.MoveJob, poll_s: float) -> float:
    """Poll at the given interval, but look again sooner when the job should end before then,
    so that the end of a move is noticed within a tenth of the interval."""
    if job.percent_complete <= 0 or job.elapsed_seconds <= 0:
        return poll_s
    remaining = job.elapsed_seconds * (100 - job.percent_complete) / job.percent_complete
    return max(poll_s / 10, min(poll_s, remaining))
