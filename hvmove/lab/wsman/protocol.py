"""The WS-Management side of the lab endpoint: namespaces, fault codes, envelopes, the
request parser, the PSRP shell and pipeline state, and the types a script handler sees."""

from __future__ import annotations

import base64
import binascii
import queue
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import psrpcore
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
)

if TYPE_CHECKING:
    from hvmove.lab.wsman.server import _Server

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
_SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
_PWSH_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
_TRANSFER_URI = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
_STATE_DONE = _SHELL_URI + "/CommandState/Done"
_STATE_RUNNING = _SHELL_URI + "/CommandState/Running"
_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

# WSManFault codes a Windows host answers with; pypsrp and callers branch on these numbers.
FAULT_OPERATION_TIMEOUT = 0x80338029  # 2150858793: Receive had nothing to say within the timeout
FAULT_SHELL_NOT_FOUND = 0x8033805B  # 2150858843: unknown ShellId (e.g. the host rebooted)
FAULT_NOT_SUPPORTED = 0x80070032  # HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)
_FAULT_TEXT = {
    FAULT_OPERATION_TIMEOUT: (
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout."
    ),
    FAULT_SHELL_NOT_FOUND: (
        "The request for the Windows Remote Shell with ShellId {shell} failed because the shell "
        "was not found on the server. Possible causes are: the specified ShellId is incorrect or "
        "the shell no longer exists on the server. Provide the correct ShellId or create a new "
        "shell and retry the operation."
    ),
}
_DEFAULT_OPERATION_TIMEOUT = 20.0
# serve_forever() checks for shutdown this often; the default 0.5 s made every fixture slow.
_POLL_INTERVAL = 0.02
_HANDSHAKE_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
@dataclass
class Invocation:
    """One pipeline as the handler sees it."""

    host: str
    script: str
    is_script: bool
    params: dict[str, Any]
    args: list[Any]
    warnings: list[str] = field(default_factory=list)
    # non-terminating errors (Write-Error): the pipeline still completes, had_errors stays False
    errors: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    shell_id: str = ""  # the WinRM shell (one pypsrp RunspacePool) the pipeline runs in
    use_local_scope: bool | None = None  # Command.UseLocalScope as sent (None: global scope)


class ScriptFailed(Exception):
    """Raised by a handler for a terminating error, like ``throw`` in the real script."""

    def __init__(
        self,
        message: str,
        error_id: str = "ScriptFailed",
        category: str = "InvalidOperation",
        hresult: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.hresult = hresult  # the exception's HResult, when Windows gives one


Handler = Callable[[Invocation], str | list[str] | None]
ControlHandler = Callable[[str, dict[str, Any]], dict[str, Any]]

# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------
_current = threading.local()


class _HostGone(Exception):
    """The host was killed while this request was being processed: no reply at all."""


class _WSManError(Exception):
    def __init__(self, code: int, message: str | None = None, *, shell: str = "") -> None:
        text = message or _FAULT_TEXT.get(code, "The lab rejected the request.").format(shell=shell)
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(eq=False)
class _Pipe:
    pid: uuid.UUID
    ps: psrpcore.ServerPipeline
    invocation: Invocation | None = None
    thread: threading.Thread | None = None
    out: bytearray = field(default_factory=bytearray)
    finished: bool = False  # a terminal PipelineState is queued: nothing more will be produced
    closed: bool = False  # the client terminated it, or the shell went away

    def stop(self) -> None:
        if self.invocation is not None:
            self.invocation.cancelled.set()
        if self.finished:
            return
        if self.ps.state == PSInvocationState.Running:
            self.ps.stop()  # queues PipelineState(Stopped) with the PipelineStopped record
        self.finished = True

    def fail(
        self,
        message: str,
        error_id: str,
        category: str,
        stack: str | None,
        hresult: int | None = None,
    ) -> None:
        # psrpcore 0.3 has no public way to end a pipeline Failed; this private call is the pin.
        self.ps._change_state(
            PSInvocationState.Failed, _error_record(message, error_id, category, stack, hresult)
        )

    def close(self) -> None:
        self.closed = True
        self.out.clear()
        self.ps.runspace_pool.pipeline_table.pop(self.pid, None)


class _Shell:
    """One RunspacePool (WinRS shell) and everything queued for its Receives."""

    def __init__(self, shell_id: str, host: str) -> None:
        self.id = shell_id
        self.host = host
        self.pool = psrpcore.ServerRunspacePool()
        self.cond = threading.Condition()
        self.out = bytearray()  # pool-level messages (no CommandId)
        self.pipes: dict[uuid.UUID, _Pipe] = {}
        self.closed = False
        self.created = time.monotonic()

    def drain(self, discard: uuid.UUID | None = None) -> None:
        """Move psrpcore's queued output into the per-target buffers (caller holds cond)."""
        # data_to_send() yields one target (the pool or one pipeline) per call: loop until None.
        while (payload := self.pool.data_to_send()) is not None:
            pid = payload.pipeline_id
            if pid is None:
                self.out += payload.data
            elif pid != discard:
                pipe = self.pipes.get(pid)
                if pipe is not None and not pipe.closed:
                    pipe.out += payload.data

    def close(self) -> None:
        with self.cond:
            self.closed = True
            for pipe in self.pipes.values():
                if pipe.invocation is not None:
                    pipe.invocation.cancelled.set()
                pipe.closed = True
            self.pipes.clear()
            self.out.clear()
            self.cond.notify_all()

    def describe(self, resource_uri: str, owner: str) -> str:
        age = int(time.monotonic() - self.created)
        return (
            "<rsp:Shell>"
            f"<rsp:ShellId>{self.id}</rsp:ShellId>"
            f"<rsp:Name>{escape(self.host)}</rsp:Name>"
            f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(owner)}</rsp:Owner>"
            "<rsp:ClientIP>127.0.0.1</rsp:ClientIP>"
            "<rsp:State>Connected</rsp:State>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            "<rsp:InputStreams>stdin pr</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
            f"<rsp:ShellRunTime>P0DT0H0M{age}S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )


class _Host:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.shells: dict[str, _Shell] = {}
        self.down = threading.Event()
        self.lifecycle = threading.RLock()  # serialises kill/revive/stop of this host
        # an injected 401 means "this account is refused now": the logon that follows fails too
        self.refuse_logons = 0
        # this host's own certificate (and its channel binding), else the endpoint's
        self.ssl: ssl.SSLContext | None = None
        self.cbt: bytes | None = None


@dataclass
class _Request:
    action: str
    operation: str
    message_id: str
    resource_uri: str
    shell_id: str | None
    operation_timeout: float
    body: ET.Element


def _parse_request(raw: bytes) -> _Request:
    root = ET.fromstring(raw)
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise ValueError("not a SOAP envelope")
    action = header.findtext("wsa:Action", "", NS).strip()
    shell_id = None
    for selector in header.findall("wsman:SelectorSet/wsman:Selector", NS):
        if selector.get("Name") == "ShellId" and selector.text:
            shell_id = _guid(selector.text)
    return _Request(
        action=action,
        operation=action.rsplit("/", 1)[-1],
        message_id=header.findtext("wsa:MessageID", "", NS).strip(),
        resource_uri=header.findtext("wsman:ResourceURI", "", NS).strip(),
        shell_id=shell_id,
        operation_timeout=_duration(header.findtext("wsman:OperationTimeout", "", NS)),
        body=body,
    )


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        return _DEFAULT_OPERATION_TIMEOUT
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("d", 0) * 86400
        + parts.get("h", 0) * 3600
        + parts.get("m", 0) * 60
        + parts.get("s", 0)
    )


def _guid(text: str) -> str:
    # pypsrp sends upper-case GUIDs and psrpcore keys by uuid.UUID; normalise for both.
    try:
        return str(uuid.UUID(text.strip())).upper()
    except ValueError:
        return text.strip().upper()


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=False)
    except binascii.Error as exc:
        raise _WSManError(FAULT_NOT_SUPPORTED, f"invalid base64 payload: {exc}") from exc


def _plain(value: Any) -> Any:
    """Turn psrpcore's PS* wrappers into plain Python values, recursively."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, queue.Queue):  # PSQueue is a queue.Queue, not a list
        return [_plain(v) for v in list(value.queue)]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):  # [guid] parameters: scripts compare them as text anyway
        return str(value)
    meta = getattr(value, "PSObject", None)
    if meta is not None and isinstance(value, psrpcore.types.PSObject):
        props = list(meta.adapted_properties) + list(meta.extended_properties)
        if props:
            return {p.name: _plain(p.get_value(value)) for p in props}
        to_string = meta.to_string
        if to_string is not None:
            return str(to_string)
    return value


def _error_record(
    message: str, error_id: str, category: str, stack: str | None, hresult: int | None = None
) -> ErrorRecord:
    # -2146233087 (0x80131501, COR_E_SYSTEM) is a RuntimeException's own HResult
    code = -2146233087 if hresult is None else hresult
    if code >= 1 << 31:
        code -= 1 << 32  # an Int32 on the wire
    exception = NETException(Message=message, HResult=code)
    # Typed like the RuntimeException a PowerShell `throw` produces, so callers that look at the
    # exception type see what a Windows host would send.
    exception.PSObject.type_names = [
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        *exception.PSTypeNames,
    ]
    try:
        cat = ErrorCategory[category]
    except KeyError:
        cat = ErrorCategory.NotSpecified
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(Category=cat, Reason="RuntimeException"),
        FullyQualifiedErrorId=error_id,
        ScriptStackTrace=stack,
    )


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["wsa"]}" '
        f'xmlns:x="{NS["wst"]}" xmlns:w="{NS["wsman"]}" xmlns:rsp="{NS["rsp"]}" '
        f'xmlns:p="{NS["wsmv"]}">'
        "<s:Header>"
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{_ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body>"
        "</s:Envelope>"
    ).encode()


def _fault_envelope(code: int, text: str, machine: str, relates_to: str) -> bytes:
    subcode = "w:TimedOut" if code == FAULT_OPERATION_TIMEOUT else "w:InternalError"
    body = (
        "<s:Fault>"
        f"<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{subcode}</s:Value>"
        "</s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(text)}</s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{NS["wsmanfault"]}" Code="{code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(text)}</f:Message>"
        "</f:WSManFault>"
        "</s:Detail>"
        "</s:Fault>"
    )
    return _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)
