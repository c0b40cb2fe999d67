"""The lab's WS-Management endpoint: a fake WinRM listener that unmodified pypsrp can talk to.

Only the transport lives here: HTTP(S) listeners, Basic auth and Negotiate (NTLM through
pyspnego's acceptor, with WinRM message encryption over HTTP and channel binding over HTTPS, as a
Windows listener does), the six WS-Man operations pypsrp
uses for PowerShell Remoting (Create, Command, Send, Receive, Signal, Delete, plus Get for
``RunspacePool.is_alive()``), fault injection, and host kill/revive. All MS-PSRP decoding and
encoding is delegated to psrpcore's server classes, which are an implementation independent of
pypsrp's own serializer. What a "script" does is decided by a handler callable supplied by the
caller; the handler runs in one worker thread per pipeline.

Pinned to psrpcore 0.3.x: a terminating error needs the private ``ServerPipeline._change_state``.
Several choices below (one write per reply, cutting keep-alive sockets on kill, long-polling
Receive) come from measuring pypsrp 0.9.1 against such a fake; each is commented where it is made.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import http.server
import json
import logging
import queue
import re
import socket
import ssl
import struct
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
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

__all__ = [
    "ControlHandler",
    "FaultQueue",
    "Handler",
    "Invocation",
    "ScriptFailed",
    "WSManEndpoint",
]

log = logging.getLogger(__name__)

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


class ScriptFailed(Exception):
    """Raised by a handler for a terminating error, like ``throw`` in the real script."""

    def __init__(
        self, message: str, error_id: str = "ScriptFailed", category: str = "InvalidOperation"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category


Handler = Callable[[Invocation], str | list[str] | None]
ControlHandler = Callable[[str, dict[str, Any]], dict[str, Any]]

FAULT_KINDS = frozenset({"drop", "drop_after", "close_after", "status", "wsmanfault", "delay"})
FAULT_ACTIONS = frozenset({"Create", "Command", "Send", "Receive", "Signal", "Delete", "Get", "*"})


@dataclass
class _Fault:
    action: str
    kind: str
    host: str | None
    code: int | None
    seconds: float
    times: int


class FaultQueue:
    """Faults to inject, matched in the order they were added; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Fault] = []

    def add(
        self,
        *,
        action: str,
        kind: str,
        host: str | None = None,
        code: int | None = None,
        seconds: float = 0.0,
        times: int = 1,
    ) -> None:
        # Validate here: a typo would otherwise be a fault that silently never fires.
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(FAULT_ACTIONS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind in ("status", "wsmanfault") and code is None:
            raise ValueError(f"fault kind {kind!r} needs a code")
        if kind == "status" and code is not None and not 400 <= code <= 599:
            raise ValueError(f"HTTP status {code} is not an error status")
        if times < 1:
            raise ValueError("times must be at least 1")
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            self._entries.append(_Fault(action, kind, host, code, float(seconds), int(times)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The entries not yet consumed, for a control handler to report."""
        with self._lock:
            return [dict(vars(e)) for e in self._entries]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _take(self, host: str, action: str) -> _Fault | None:
        with self._lock:
            for entry in self._entries:
                if entry.action not in ("*", action) or entry.host not in (None, host):
                    continue
                entry.times -= 1
                if entry.times <= 0:
                    self._entries.remove(entry)
                return entry
        return None


class WSManEndpoint:
    """A set of fake WinRM hosts, one HTTP(S) listener per host name, sharing one handler."""

    def __init__(
        self,
        handler: Handler,
        *,
        username: str,
        password: str,
        tls: tuple[Path, Path] | None = None,
        control: ControlHandler | None = None,
        ntlm_domain: str | None = None,
    ) -> None:
        self.handler = handler
        self.control = control
        self.username = username
        self.faults = FaultQueue()
        # Every authenticated WS-Man request as (host, action), faulted ones included. Trimmed to
        # the newest half once it passes `log_limit`, so a lab left running overnight stays small.
        self.log: list[tuple[str, str]] = []
        self.log_limit = 100_000
        # completed logons per scheme and requests that came sealed, for tests and `lab status`
        self.logons: dict[str, int] = {"basic": 0, "negotiate": 0}
        self.sealed_requests = 0
        self._log_lock = threading.Lock()
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}".encode()
        self._ssl: ssl.SSLContext | None = None
        self._cbt: bytes | None = None
        if tls is not None:
            cert, key = tls
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.load_cert_chain(str(cert), str(key))
            self._cbt = _tls_server_end_point(cert)
        # Negotiate: the account is DOMAIN\username; None leaves the listener Basic-only
        self.ntlm_domain = ntlm_domain
        if ntlm_domain is not None:
            _NTLM_STORE.add(ntlm_domain, username, password)
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._stopped = False
        # called with (host, shell id) after a client deleted its shell (RunspacePool.close())
        self.on_shell_closed: Callable[[str, str], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    def add_host(self, name: str, port: int = 0) -> int:
        with self._lock:
            if self._stopped:
                raise RuntimeError("endpoint is stopped")
            if name in self._hosts:
                raise ValueError(f"lab host {name!r} already exists")
            host = _Host(name, port)
            self._hosts[name] = host
        try:
            self._start(host)
        except BaseException:
            with self._lock:
                del self._hosts[name]
            raise
        return host.port

    def set_host_certificate(self, name: str, cert: Path, key: Path) -> None:
        """Serve this host with its own certificate (e.g. one issued for another name); the
        endpoint must be HTTPS. Takes effect for new connections."""
        if self._ssl is None:
            raise ValueError("the endpoint serves plain HTTP")
        host = self._host(name)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        host.cbt = _tls_server_end_point(cert)
        host.ssl = ctx

    def port(self, name: str) -> int:
        return self._host(name).port

    def hosts(self) -> list[str]:
        with self._lock:
            return list(self._hosts)

    def is_alive(self, name: str) -> bool:
        return self._host(name).server is not None

    def kill_host(self, name: str) -> None:
        host = self._host(name)
        with host.lifecycle:
            self._take_down(host)

    def revive_host(self, name: str) -> None:
        host = self._host(name)
        with host.lifecycle:
            if host.server is not None:
                return
            with self._lock:
                if self._stopped:
                    raise RuntimeError("endpoint is stopped")
            self._start(host)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            hosts = list(self._hosts.values())
        for host in hosts:
            with host.lifecycle:
                self._take_down(host)

    def __enter__(self) -> WSManEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _host(self, name: str) -> _Host:
        with self._lock:
            try:
                return self._hosts[name]
            except KeyError:
                raise KeyError(f"no lab host named {name!r}") from None

    def _start(self, host: _Host) -> None:
        server = _Server(self, host)
        host.port = server.server_address[1]
        host.down = threading.Event()
        host.server = server
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"lab-wsman-{host.name}",
            daemon=True,
        )
        thread.start()
        host.thread = thread

    def _take_down(self, host: _Host) -> None:
        server = host.server
        if server is None:
            return
        host.server = None
        host.down.set()  # ends injected delays early
        server.closed = True
        # shutdown() returns only after serve_forever() left its loop, so every accepted socket is
        # in `conns` by now and none can slip through the cut below.
        server.shutdown()
        server.server_close()
        # ThreadingHTTPServer keeps serving keep-alive connections after shutdown(); a host that
        # is gone must not answer, so cut them all.
        exempt = getattr(_current, "connection", None)
        with server.conn_lock:
            conns = list(server.conns)
        for conn in conns:
            if conn is exempt:
                continue  # a /lab/ request that killed its own host still gets its answer
            _cut(conn)
        if host.thread is not None:
            host.thread.join(timeout=2)
            host.thread = None
        with self._lock:
            shells = list(host.shells.values())
            host.shells.clear()
        for shell in shells:
            shell.close()

    # -- WS-Man dispatch ----------------------------------------------------------------------
    def _count(self, what: str) -> None:
        with self._log_lock:
            if what == "sealed":
                self.sealed_requests += 1
            else:
                self.logons[what] += 1

    def _record(self, host: str, action: str) -> None:
        with self._log_lock:
            self.log.append((host, action))
            if len(self.log) > self.log_limit:
                del self.log[: len(self.log) - self.log_limit // 2]

    def _dispatch(self, host: _Host, req: _Request, origin: _Server) -> bytes:
        op = req.operation
        if op == "Create":
            return self._op_create(host, req, origin)
        if op == "Delete":
            return self._op_delete(host, req)
        shell = self._shell(host, req)
        if op == "Command":
            return self._op_command(host, shell, req)
        if op == "Send":
            return self._op_send(shell, req)
        if op == "Receive":
            return self._op_receive(host, shell, req)
        if op == "Signal":
            return self._op_signal(shell, req)
        if op == "Get":
            return self._op_get(host, shell, req)
        raise _WSManError(FAULT_NOT_SUPPORTED, f"The lab does not implement {req.action}.")

    def _shell(self, host: _Host, req: _Request) -> _Shell:
        with self._lock:
            shell = host.shells.get(req.shell_id or "")
        if shell is None:
            raise _WSManError(FAULT_SHELL_NOT_FOUND, shell=req.shell_id or "")
        return shell

    def _op_create(self, host: _Host, req: _Request, origin: _Server) -> bytes:
        if not req.resource_uri.startswith(_PWSH_URI_PREFIX):
            raise _WSManError(
                FAULT_NOT_SUPPORTED,
                f"The lab only hosts PowerShell shells, not {req.resource_uri}.",
            )
        shell_el = req.body.find("rsp:Shell", NS)
        creation = shell_el.find("pwsh:creationXml", NS) if shell_el is not None else None
        if shell_el is None or creation is None or not creation.text:
            raise _WSManError(FAULT_NOT_SUPPORTED, "Create without rsp:Shell/creationXml.")
        shell_id = _guid(shell_el.get("ShellId") or str(uuid.uuid4()))
        shell = _Shell(shell_id, host.name)
        with shell.cond:
            shell.pool.receive_data(
                psrpcore.PSRPPayload(_b64(creation.text), psrpcore.StreamType.default, None)
            )
            # SessionCapability + InitRunspacePool queue their replies synchronously, which matters:
            # pypsrp's open() does not swallow an OperationTimeout on its pool-level Receive.
            self._pump(shell)
            shell.drain()
        with self._lock:
            # A Create that raced a kill must not leave a shell behind in the rebooted host.
            if host.server is not origin:
                raise _HostGone
            host.shells[shell_id] = shell
        address = f"{self.scheme}://127.0.0.1:{host.port}/wsman"
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>{escape(address)}</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{escape(req.resource_uri)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters>"
            "</x:ResourceCreated>"
            f"{shell.describe(req.resource_uri, self.username)}"
        )
        return _envelope(_TRANSFER_URI + "/CreateResponse", req.message_id, body)

    def _op_delete(self, host: _Host, req: _Request) -> bytes:
        with self._lock:
            shell = host.shells.pop(req.shell_id or "", None)
        if shell is None:
            raise _WSManError(FAULT_SHELL_NOT_FOUND, shell=req.shell_id or "")
        shell.close()
        if self.on_shell_closed is not None:
            self.on_shell_closed(host.name, shell.id)
        return _envelope(_TRANSFER_URI + "/DeleteResponse", req.message_id, "")

    def _op_get(self, host: _Host, shell: _Shell, req: _Request) -> bytes:
        body = shell.describe(req.resource_uri, self.username)
        return _envelope(_TRANSFER_URI + "/GetResponse", req.message_id, body)

    def _op_command(self, host: _Host, shell: _Shell, req: _Request) -> bytes:
        line = req.body.find("rsp:CommandLine", NS)
        if line is None:
            raise _WSManError(FAULT_NOT_SUPPORTED, "Command without rsp:CommandLine.")
        command_id = _guid(line.get("CommandId") or str(uuid.uuid4()))
        args = line.find("rsp:Arguments", NS)
        data = _b64(args.text) if args is not None and args.text else b""
        pid = uuid.UUID(command_id)
        with shell.cond:
            if shell.closed:
                raise _WSManError(FAULT_SHELL_NOT_FOUND, shell=shell.id)
            # psrpcore looks the pipeline up while decoding CreatePipeline, so it must exist first.
            shell.pipes[pid] = _Pipe(pid, psrpcore.ServerPipeline(shell.pool, pid))
            shell.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pid))
            self._pump(shell, pid)
        body = (
            "<rsp:CommandResponse>"
            f"<rsp:CommandId>{command_id}</rsp:CommandId>"
            "</rsp:CommandResponse>"
        )
        return _envelope(_SHELL_URI + "/CommandResponse", req.message_id, body)

    def _op_send(self, shell: _Shell, req: _Request) -> bytes:
        send = req.body.find("rsp:Send", NS)
        streams = send.findall("rsp:Stream", NS) if send is not None else []
        with shell.cond:
            if shell.closed:
                raise _WSManError(FAULT_SHELL_NOT_FOUND, shell=shell.id)
            target: uuid.UUID | None = None
            for stream in streams:
                cid = stream.get("CommandId")
                pid = uuid.UUID(cid) if cid else None
                if pid is not None and pid not in shell.pipes:
                    raise _WSManError(FAULT_NOT_SUPPORTED, f"Send for unknown command {cid}.")
                stream_type = (
                    psrpcore.StreamType.prompt_response
                    if stream.get("Name") == "pr"
                    else psrpcore.StreamType.default
                )
                shell.pool.receive_data(
                    psrpcore.PSRPPayload(_b64(stream.text or ""), stream_type, pid)
                )
                target = pid or target
            self._pump(shell, target)
            shell.drain()
            shell.cond.notify_all()
        return _envelope(_SHELL_URI + "/SendResponse", req.message_id, "<rsp:SendResponse/>")

    def _op_receive(self, host: _Host, shell: _Shell, req: _Request) -> bytes:
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        pid = uuid.UUID(cid) if cid else None
        deadline = time.monotonic() + req.operation_timeout
        with shell.cond:
            while True:
                if shell.closed:
                    raise _WSManError(FAULT_SHELL_NOT_FOUND, shell=shell.id)
                pipe = None
                if pid is not None:
                    pipe = shell.pipes.get(pid)
                    if pipe is None:
                        raise _WSManError(
                            FAULT_SHELL_NOT_FOUND, f"The command {cid} was not found in the shell."
                        )
                buf = pipe.out if pipe is not None else shell.out
                # An empty "Done" reply is still an answer: without it a Receive after the end
                # would long-poll for nothing.
                if buf or (pipe is not None and pipe.finished):
                    data = bytes(buf)
                    buf.clear()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Answering "no data" at once instead made pypsrp spin in a hot Receive loop.
                    raise _WSManError(FAULT_OPERATION_TIMEOUT)
                shell.cond.wait(remaining)
        attr = f' CommandId="{_guid(cid)}"' if cid else ""
        parts = ["<rsp:ReceiveResponse>"]
        if data:
            b64 = base64.b64encode(data).decode("ascii")
            parts.append(f'<rsp:Stream Name="stdout"{attr}>{b64}</rsp:Stream>')
        if pipe is not None:
            state = _STATE_DONE if pipe.finished else _STATE_RUNNING
            parts.append(f'<rsp:CommandState{attr} State="{state}"/>')
        parts.append("</rsp:ReceiveResponse>")
        return _envelope(_SHELL_URI + "/ReceiveResponse", req.message_id, "".join(parts))

    def _op_signal(self, shell: _Shell, req: _Request) -> bytes:
        signal = req.body.find("rsp:Signal", NS)
        code_el = signal.find("rsp:Code", NS) if signal is not None else None
        code = (code_el.text or "").strip() if code_el is not None else ""
        cid = signal.get("CommandId") if signal is not None else None
        pid = uuid.UUID(cid) if cid else None
        with shell.cond:
            pipe = shell.pipes.get(pid) if pid is not None else None
            if pipe is not None:
                if code.endswith("ctrl_c") or code.endswith("ctrl_break"):
                    pipe.stop()
                elif code.lower().endswith("/terminate"):
                    pipe.stop()
                    pipe.close()
                    shell.pipes.pop(pipe.pid, None)
                shell.drain()
                shell.cond.notify_all()
            # An unknown pipeline is not an error: Terminate after a stop must stay harmless.
        return _envelope(_SHELL_URI + "/SignalResponse", req.message_id, "<rsp:SignalResponse/>")

    def _pump(self, shell: _Shell, pid: uuid.UUID | None = None) -> None:
        """Process every complete PSRP message received so far (caller holds shell.cond)."""
        try:
            self._pump_events(shell)
        except Exception as exc:
            pipe = shell.pipes.get(pid) if pid is not None else None
            if pipe is None or pipe.invocation is not None or pipe.finished:
                raise
            # The pipeline could not be decoded (e.g. pypsrp 0.9.1 sends every Python int as
            # <I32>, so 2**40 arrives out of range). Fail that pipeline with the reason instead of
            # a transport error, so the caller sees what it sent wrong.
            log.warning("lab could not decode pipeline %s: %s", pid, exc)
            pipe.fail(
                f"lab could not decode the pipeline sent by the client: {exc}",
                "LabDecodeError",
                "InvalidData",
                traceback.format_exc(),
            )
            pipe.finished = True
            shell.drain()
            shell.cond.notify_all()

    def _pump_events(self, shell: _Shell) -> None:
        pool = shell.pool
        while (event := pool.next_event()) is not None:
            if isinstance(event, psrpcore.CreatePipelineEvent):
                pipe = shell.pipes.get(event.pipeline_id)
                if pipe is not None and pipe.invocation is None:
                    self._start_pipeline(shell, pipe, event)
            elif isinstance(
                event,
                (
                    psrpcore.SetMaxRunspacesEvent,
                    psrpcore.SetMinRunspacesEvent,
                    psrpcore.ResetRunspaceStateEvent,
                ),
            ):
                # pypsrp blocks until it gets an availability answer, so always agree.
                pool.runspace_availability_response(event.ci, True)
            elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
                pool.runspace_availability_response(event.ci, max(pool.max_runspaces, 1))

    def _start_pipeline(
        self, shell: _Shell, pipe: _Pipe, event: psrpcore.CreatePipelineEvent
    ) -> None:
        commands = event.pipeline.commands
        first = commands[0]
        pipe.invocation = Invocation(
            host=shell.host,
            script=str(first.command_text),
            is_script=bool(first.is_script),
            params={str(n): _plain(v) for n, v in first.parameters if n is not None},
            args=[_plain(v) for n, v in first.parameters if n is None],
            shell_id=shell.id,
        )
        pipe.ps.start()
        # start() queues a PipelineState(Running); a real host does not send it, so drop it.
        shell.drain(discard=pipe.pid)
        thread = threading.Thread(
            target=self._run_pipeline,
            args=(shell, pipe),
            name=f"lab-pipeline-{shell.host}-{pipe.pid}",
            daemon=True,
        )
        pipe.thread = thread
        thread.start()

    def _run_pipeline(self, shell: _Shell, pipe: _Pipe) -> None:
        inv = pipe.invocation
        assert inv is not None
        outputs: list[Any] = []
        failure: tuple[str, str, str, str | None] | None = None
        try:
            result = self.handler(inv)
            if result is None:
                outputs = []
            elif isinstance(result, (str, bytes)) or not isinstance(result, (list, tuple)):
                outputs = [result]
            else:
                outputs = list(result)
        except ScriptFailed as exc:
            failure = (exc.message, exc.error_id, exc.category, None)
        except Exception as exc:
            # A lab bug must read as a failed script with a message, not as a dropped connection.
            log.exception("lab handler failed for %r on %s", inv.script[:80], inv.host)
            failure = (
                f"lab handler raised {type(exc).__name__}: {exc}",
                "LabHandlerError",
                "NotSpecified",
                traceback.format_exc(),
            )
        with shell.cond:
            if pipe.finished or pipe.closed or shell.closed:
                return  # stopped, terminated or the host went away: the client is not listening
            try:
                for warning in inv.warnings:
                    pipe.ps.write_warning(str(warning))
                for error in inv.errors:
                    pipe.ps.write_error(
                        NETException(Message=str(error)),
                        ErrorCategoryInfo(Category=ErrorCategory.NotSpecified),
                        None,
                        "Microsoft.PowerShell.Commands.WriteErrorException",
                    )
                if failure is None:
                    for value in outputs:
                        pipe.ps.write_output(value)
                    pipe.ps.complete()
                else:
                    pipe.fail(*failure)
            except Exception as exc:
                log.exception("lab could not deliver the result of %r", inv.script[:80])
                pipe.fail(
                    f"lab could not serialise the handler result: {type(exc).__name__}: {exc}",
                    "LabSerializationError",
                    "NotSpecified",
                    traceback.format_exc(),
                )
            pipe.finished = True
            shell.drain()
            shell.cond.notify_all()

    # -- control route ------------------------------------------------------------------------
    def _control(self, command: str, raw: bytes) -> tuple[int, bytes, str]:
        if self.control is None:
            return 404, b"this lab has no control handler\n", "text/plain; charset=utf-8"
        try:
            payload = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, f"invalid JSON body: {exc}\n".encode(), "text/plain; charset=utf-8"
        if not isinstance(payload, dict):
            return 400, b"the JSON body must be an object\n", "text/plain; charset=utf-8"
        try:
            answer = self.control(command, payload)
        except ValueError as exc:
            return 400, f"{exc}\n".encode(), "text/plain; charset=utf-8"
        return 200, json.dumps(answer).encode(), "application/json"


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

    def fail(self, message: str, error_id: str, category: str, stack: str | None) -> None:
        # psrpcore 0.3 has no public way to end a pipeline Failed; this private call is the pin.
        self.ps._change_state(
            PSInvocationState.Failed, _error_record(message, error_id, category, stack)
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


def _error_record(message: str, error_id: str, category: str, stack: str | None) -> ErrorRecord:
    exception = NETException(Message=message, HResult=-2146233087)
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


def _cut(conn: socket.socket) -> None:
    # OSError: already closed by the peer or by its own thread.
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, endpoint: WSManEndpoint, host: _Host) -> None:
        self.endpoint = endpoint
        self.lab_host = host
        self.conns: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        self.closed = False
        super().__init__(("127.0.0.1", host.port), _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked from the serving thread, before the worker starts, so a kill cannot miss it.
        with self.conn_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        ctx = self.lab_host.ssl or self.endpoint._ssl
        if ctx is not None:
            # The handshake runs in the connection's own thread so that a slow or failing client
            # (e.g. one that rejects the certificate) cannot stall accept().
            try:
                # A client that connects and never speaks must not pin this thread forever.
                request.settimeout(_HANDSHAKE_TIMEOUT)
                conn = ctx.wrap_socket(request, server_side=True)
                conn.settimeout(None)
            except (OSError, ssl.SSLError):
                self._forget(request)
                return
            with self.conn_lock:
                self.conns.discard(request)
                self.conns.add(conn)
            if self.closed:
                _cut(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            if conn is not request:
                self._forget(conn)
                with contextlib.suppress(OSError):
                    conn.close()

    def shutdown_request(self, request: Any) -> None:
        self._forget(request)
        super().shutdown_request(request)

    def _forget(self, conn: socket.socket) -> None:
        with self.conn_lock:
            self.conns.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Cut connections and clients that hang up are normal here; stderr noise is not wanted.
        log.debug("lab connection error from %s", client_address, exc_info=True)


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.lab_host.name, format % args)

    def do_POST(self) -> None:
        try:
            self._handle_post()
        except Exception:
            # An unhandled error would drop the socket and look like a network fault to the
            # client; a 500 carrying the traceback shows up as WinRMTransportError instead.
            log.exception("lab endpoint error")
            self._reply(500, traceback.format_exc().encode(), "text/plain; charset=utf-8")

    # Per connection (one handler instance serves one keep-alive connection): the Negotiate
    # context being built, and once complete the one that seals this connection's messages.
    _negotiating: Any = None
    _session: Any = None
    _sealed = False  # the request being answered came encrypted: so goes the reply

    def _challenge(self, token: str | None = None) -> None:
        headers = [("WWW-Authenticate", token)] if token else self._schemes()
        self._reply(401, b"", "text/plain; charset=utf-8", headers)

    def _schemes(self) -> list[tuple[str, str]]:
        out = [("WWW-Authenticate", 'Basic realm="WSMAN"')]
        if self.server.endpoint.ntlm_domain is not None:
            out.insert(0, ("WWW-Authenticate", "Negotiate"))
        return out

    def _authenticate(self, raw: bytes) -> tuple[bool, list[tuple[str, str]]]:
        """(whether to go on with the request, headers for its reply)."""
        endpoint = self.server.endpoint
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "basic":
            if hmac.compare_digest(header.encode(), endpoint._auth):
                endpoint._count("basic")
                return True, []
            self._challenge()
            return False, []
        if scheme.lower() in ("negotiate", "ntlm") and endpoint.ntlm_domain is not None:
            import spnego  # pyspnego: only a Negotiate listener needs it
            import spnego.channel_bindings
            import spnego.exceptions

            self._session = None
            try:
                if self._negotiating is None:
                    cbt = None
                    host_cbt = self.server.lab_host.cbt or endpoint._cbt
                    if host_cbt is not None:
                        cbt = spnego.channel_bindings.GssChannelBindings(application_data=host_cbt)
                    self._negotiating = spnego.server(
                        protocol="negotiate",
                        channel_bindings=cbt,
                        options=spnego.NegotiateOptions.wrapping_winrm,
                    )
                out = self._negotiating.step(base64.b64decode(token))
            except (spnego.exceptions.SpnegoError, binascii.Error, ValueError) as exc:
                log.info("lab %s: logon refused: %s", self.server.lab_host.name, exc)
                self._negotiating = None
                self._challenge()
                return False, []
            final = (
                [("WWW-Authenticate", f"{scheme} {base64.b64encode(out).decode()}")] if out else []
            )
            if not self._negotiating.complete:
                self._challenge(final[0][1])
                return False, []
            if self.server.lab_host.refuse_logons > 0:
                self.server.lab_host.refuse_logons -= 1
                self._negotiating = None
                self._challenge()
                return False, []
            self._session, self._negotiating = self._negotiating, None
            endpoint._count("negotiate")
            if not raw:  # pypsrp's empty POST that only sets up the context for encryption
                self._reply(200, b"", "application/soap+xml;charset=UTF-8", final)
                return False, []
            return True, final
        if self._session is not None:
            return True, []  # the connection authenticated earlier
        self._challenge()
        return False, []

    def _handle_post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self._sealed = False
        go_on, self._extra = self._authenticate(raw)
        if not go_on:
            return
        ctype = self.headers.get("Content-Type") or ""
        if ctype.startswith("multipart/encrypted"):
            if self._session is None:
                self._challenge()
                return
            try:
                raw = _unseal(self._session, raw, _boundary(ctype))
            except Exception as exc:  # a message sealed with another context's keys
                log.info("lab %s: cannot unseal a message: %s", self.server.lab_host.name, exc)
                self._reply(400, b"cannot decrypt\n", "text/plain; charset=utf-8")
                return
            self._sealed = True
            self.server.endpoint._count("sealed")
        path = urlsplit(self.path).path
        if path.startswith("/lab/"):
            self._handle_control(path[len("/lab/") :], raw)
        elif path.rstrip("/") == "/wsman":
            self._handle_wsman(raw)
        else:
            self._reply(404, b"Not Found\n", "text/plain; charset=utf-8")

    def _handle_control(self, command: str, raw: bytes) -> None:
        endpoint = self.server.endpoint
        _current.connection = self.connection
        try:
            status, body, ctype = endpoint._control(command, raw)
        finally:
            _current.connection = None
        self._reply(status, body, ctype)
        if self.server.closed:
            # The control command took this very host down: answer, then behave like a dead host.
            self.close_connection = True

    def _handle_wsman(self, raw: bytes) -> None:
        endpoint = self.server.endpoint
        host = self.server.lab_host
        try:
            req = _parse_request(raw)
        except (ET.ParseError, ValueError) as exc:
            self._reply(400, f"malformed WS-Man request: {exc}\n".encode(), "text/plain")
            return
        endpoint._record(host.name, req.operation)

        fault = endpoint.faults._take(host.name, req.operation)
        kind = fault.kind if fault is not None else None
        if fault is not None:
            log.info("lab %s: injecting %s on %s", host.name, fault.kind, req.operation)
        if kind == "drop":
            self._drop()
            return
        if kind == "status":
            assert fault is not None and fault.code is not None
            extra = None
            if fault.code == 401:
                extra = self._schemes()
                self._session = None
                host.refuse_logons = 1 if endpoint.ntlm_domain is not None else 0
            text = f"lab: injected HTTP {fault.code} on {req.operation}\n".encode()
            self._reply(fault.code, text, "text/plain; charset=utf-8", extra)
            return
        if kind == "wsmanfault":
            assert fault is not None and fault.code is not None
            text = _FAULT_TEXT.get(
                fault.code, f"lab: injected WS-Management fault {fault.code:#x}."
            ).format(shell=req.shell_id or "")
            self._reply_xml(500, _fault_envelope(fault.code, text, host.name, req.message_id))
            return
        if kind == "delay":
            assert fault is not None
            if host.down.wait(fault.seconds):
                self._drop()  # the host died while this request was "in flight"
                return

        try:
            status, body = 200, endpoint._dispatch(host, req, self.server)
        except _WSManError as err:
            status, body = 500, _fault_envelope(err.code, err.text, host.name, req.message_id)
        except _HostGone:
            self._drop()
            return

        if kind == "drop_after":
            self._drop()
            return
        self._reply_xml(status, body)
        if kind == "close_after":
            # No "Connection: close": the client believes the connection is reusable, which is
            # exactly the race a real server's keep-alive timeout creates.
            self._drop()

    def _drop(self) -> None:
        self.close_connection = True
        _cut(self.connection)

    def _reply_xml(self, status: int, body: bytes) -> None:
        ctype = "application/soap+xml;charset=UTF-8"
        if self._sealed and self._session is not None:
            ctype, body = _seal(self._session, body)
        self._reply(status, body, ctype, getattr(self, "_extra", None))

    def _reply(
        self,
        status: int,
        body: bytes,
        ctype: str,
        extra: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        lines = [
            f"HTTP/1.1 {status} {phrase}",
            f"Server: {self.server_version}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
        ]
        pairs = list(extra.items()) if isinstance(extra, dict) else list(extra or [])
        lines.extend(f"{k}: {v}" for k, v in pairs)
        # One write for status, headers and body: two writes meet Nagle plus delayed ACK and cost
        # 40 ms per request.
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class _NtlmStore:
    """pyspnego's NTLM acceptor finds accounts in the file named by NTLM_USER_FILE, one per
    process: every lab endpoint of this process adds its account there, under its own domain so
    that labs with different passwords cannot be confused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._lines: dict[str, str] = {}

    def add(self, domain: str, username: str, password: str) -> None:
        import atexit
        import os
        import tempfile

        with self._lock:
            if self._path is None:
                fd, name = tempfile.mkstemp(prefix="hvmove-lab-ntlm-", text=True)  # mode 0600
                os.close(fd)
                self._path = Path(name)
                atexit.register(self._path.unlink, missing_ok=True)
            self._lines[f"{domain.lower()}\\{username.lower()}"] = f"{domain}:{username}:{password}"
            self._path.write_text("\n".join(self._lines.values()) + "\n", encoding="utf-8")
            os.environ["NTLM_USER_FILE"] = str(self._path)


_NTLM_STORE = _NtlmStore()


def _tls_server_end_point(cert_pem: Path) -> bytes:
    """The channel binding a client computes from this certificate (RFC 5929 section 4.1: the
    certificate's own signature hash, SHA-256 in place of MD5 and SHA-1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return b"tls-server-end-point:" + digest.finalize()


# WinRM message encryption (MS-WSMV 2.2.9.1): a MIME-like body of parts, each the original
# length, then the security trailer's length (uint32 LE), the trailer and the sealed bytes. Written
# here from the specification, not taken over from the client library, so the two sides can differ.
_BOUNDARY = "Encrypted Boundary"
_SPNEGO_SEALED = "application/HTTP-SPNEGO-session-encrypted"


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    return m.group(1) if m else _BOUNDARY


def _unseal(context: Any, body: bytes, boundary: str) -> bytes:
    parts = [
        p for p in re.split(rb"--\s*" + re.escape(boundary.encode()) + rb"(?:--)?\r\n", body) if p
    ]
    if not parts or len(parts) % 2:
        raise ValueError("not a multipart/encrypted body")
    out = b""
    for meta, payload in zip(parts[::2], parts[1::2], strict=True):
        length = re.search(rb"Length=(\d+)", meta)
        if length is None:
            raise ValueError("no OriginalContent length")
        sealed = payload.split(b"\r\n", 1)[1]  # after "\tContent-Type: application/octet-stream"
        (size,) = struct.unpack("<I", sealed[:4])
        data = context.unwrap_winrm(sealed[4 : 4 + size], sealed[4 + size :])
        if len(data) != int(length.group(1)):
            raise ValueError(f"unsealed {len(data)} bytes, the header said {length.group(1)}")
        out += data
    return out


def _seal(context: Any, body: bytes) -> tuple[str, bytes]:
    wrapped = context.wrap_winrm(body)
    head = "\r\n".join(
        [
            f"--{_BOUNDARY}",
            f"\tContent-Type: {_SPNEGO_SEALED}",
            "\tOriginalContent: type=application/soap+xml;charset=UTF-8;"
            f"Length={len(body) + wrapped.padding_length}",
            f"--{_BOUNDARY}",
            "\tContent-Type: application/octet-stream",
            "",
        ]
    ).encode()
    sealed = struct.pack("<I", len(wrapped.header)) + wrapped.header + wrapped.data
    ctype = f'multipart/encrypted;protocol="{_SPNEGO_SEALED}";boundary="{_BOUNDARY}"'
    return ctype, head + sealed + f"--{_BOUNDARY}--\r\n".encode()
