"""Typed failures of a host call, mapped from what pypsrp, requests and the script report.

Three families, because each needs a different reaction:

- ``TransientError``: the call did not get through or the host was busy; retrying is safe.
- ``MaybeRanError`` (a TransientError): the reply to a call that changes the host was lost, so the
  change may or may not have happened. A retry must look at the host before it acts again.
- ``PermanentError``: the host (or the script) said no; retrying will not help.
"""

from __future__ import annotations

from hvmove.errors import HvmoveError


class HostError(HvmoveError):
    def __init__(self, host: str, script: str, message: str) -> None:
        super().__init__(f"{host}: {script}: {message}")
        self.host = host
        self.script = script
        self.detail = message


class TransientError(HostError):
    """Nothing changed on the host, or only a read was lost: retry with backoff."""


class HostUnreachable(TransientError):
    """The connection could not be made at all (refused, DNS, connect timeout)."""


class HostBusy(TransientError):
    """The host refused for now: migration limit reached, VM busy with another operation."""


class MaybeRanError(TransientError):
    """The reply to a mutating call was lost: observe the host before trying again."""


class ShellGone(TransientError):
    """The host no longer knows the session (reboot, WinRM restart); nothing ran."""


class DeadlineExceeded(TransientError):
    """The call did not finish before its deadline and was stopped."""


class PermanentError(HostError):
    """Retrying will not help."""


class ScriptError(PermanentError):
    """The script threw: the host's own message, e.g. 'VM ... not found'."""

    def __init__(self, host: str, script: str, message: str, error_id: str = "") -> None:
        super().__init__(host, script, message)
        self.error_id = error_id


class AuthenticationFailed(PermanentError):
    """Credentials rejected (HTTP 401)."""


class TlsError(PermanentError):
    """The host's certificate is not trusted (or TLS failed)."""


class ProtocolError(PermanentError):
    """The script's output is not the one JSON document its contract promises."""


# Messages of refusals that clear by themselves: Hyper-V's migration limit and "object busy".
BUSY_MARKERS = (
    "migration limit",
    "maximumstoragemigrations",
    "current state",
    "already in progress",
    "being backed up",
)


def is_busy_message(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in BUSY_MARKERS)
