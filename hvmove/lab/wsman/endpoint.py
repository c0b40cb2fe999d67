"""The lab's fake WinRM hosts: one listener per host name, the six WS-Man operations pypsrp
uses (Create, Command, Send, Receive, Signal, Delete, plus Get), host kill and revive."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import psrpcore
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    NETException,
)

from hvmove.lab.wsman.faults import FaultQueue
from hvmove.lab.wsman.logon import _NTLM_STORE, _tls_server_end_point
from hvmove.lab.wsman.protocol import (
    _POLL_INTERVAL,
    _PWSH_URI_PREFIX,
    _SHELL_URI,
    _STATE_DONE,
    _STATE_RUNNING,
    _TRANSFER_URI,
    FAULT_NOT_SUPPORTED,
    FAULT_OPERATION_TIMEOUT,
    FAULT_SHELL_NOT_FOUND,
    NS,
    ControlHandler,
    Handler,
    Invocation,
    ScriptFailed,
    _b64,
    _current,
    _envelope,
    _guid,
    _Host,
    _HostGone,
    _Pipe,
    _plain,
    _Request,
    _Shell,
    _WSManError,
)
from hvmove.lab.wsman.server import _cut, _Server

log = logging.getLogger(__name__)


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
            use_local_scope=first.use_local_scope,
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
        failure: tuple[str, str, str, str | None, int | None] | None = None
        try:
            result = self.handler(inv)
            if result is None:
                outputs = []
            elif isinstance(result, (str, bytes)) or not isinstance(result, (list, tuple)):
                outputs = [result]
            else:
                outputs = list(result)
        except ScriptFailed as exc:
            failure = (exc.message, exc.error_id, exc.category, None, exc.hresult)
        except Exception as exc:
            # A lab bug must read as a failed script with a message, not as a dropped connection.
            log.exception("lab handler failed for %r on %s", inv.script[:80], inv.host)
            failure = (
                f"lab handler raised {type(exc).__name__}: {exc}",
                "LabHandlerError",
                "NotSpecified",
                traceback.format_exc(),
                None,
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
