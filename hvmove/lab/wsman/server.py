"""HTTP(S) serving for the lab endpoint: the threading server and the request handler that
authenticates, unseals, injects faults and dispatches each request."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import http.server
import logging
import socket
import ssl
import threading
import traceback
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from hvmove.lab.wsman.protocol import (
    _FAULT_TEXT,
    _HANDSHAKE_TIMEOUT,
    _current,
    _fault_envelope,
    _Host,
    _HostGone,
    _parse_request,
    _WSManError,
)
from hvmove.lab.wsman.sealing import _boundary, _seal, _unseal

if TYPE_CHECKING:
    from hvmove.lab.wsman.endpoint import WSManEndpoint

log = logging.getLogger(__name__)


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
