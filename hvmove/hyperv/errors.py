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


# Refusals that clear by themselves (the migration limit, a VM busy with a backup or a merge) are
# recognised by what does not depend on the host's language: Hyper-V's messages are localized
# (review windows-scripts.md finding 10), so the text is never read. ErrorCategory values of
# System.Management.Automation.ErrorCategory (learn.microsoft.com/dotnet/api/
# system.management.automation.errorcategory): 19 ResourceBusy, 21 ResourceUnavailable.
BUSY_CATEGORIES = frozenset({19, 21})
# FullyQualifiedErrorId, before its ",Command" part: the scripts' own busy refusals (Write-Error
# -ErrorId), and the WMI return codes they report: 32774 "System is in use" and 32775 "Invalid
# state for this operation" (migratevirtualsystemtohost-msvm-virtualsystemmigrationservice).
BUSY_ERROR_IDS = frozenset(
    {
        "HvmoveMigrationLimit",
        "HvmoveWmiReturn32774",
        "HvmoveWmiReturn32775",
        "InvalidState",
        "ObjectInUse",
    }
)
# HRESULTs: ERROR_SHARING_VIOLATION (file in use), ERROR_BUSY, ERROR_INVALID_STATE.
BUSY_HRESULTS = frozenset({0x80070020, 0x800700AA, 0x8007139F})


def is_busy(error_id: str, category: int | None, hresult: int | None) -> bool:
    """Whether a script's error is a refusal for now (retry later) rather than a no."""
    if category in BUSY_CATEGORIES:
        return True
    if error_id.split(",", 1)[0].strip() in BUSY_ERROR_IDS:
        return True
    return hresult is not None and (hresult & 0xFFFFFFFF) in BUSY_HRESULTS
