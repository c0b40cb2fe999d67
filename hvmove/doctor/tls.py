"""The TLS part of `hvmove doctor`: one handshake as hvmove's client would make it (same trust,
same name), and a second one without validation to say what the host's certificate is."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

# OpenSSL's X509_V_ERR_* codes that decide the remedy
_HOSTNAME_MISMATCH = 62
_IP_MISMATCH = 64
_EXPIRED = 10
_NOT_YET_VALID = 9


@dataclass
class TlsResult:
    ok: bool
    problem: str = ""  # "" | name | expired | untrusted | handshake
    detail: str = ""
    names: list[str] = field(default_factory=list)  # the certificate's SAN entries
    expires: datetime.datetime | None = None

    def days_left(self, now: datetime.datetime | None = None) -> float | None:
        if self.expires is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        return (self.expires - now).total_seconds() / 86400


def probe(address: str, port: int, ca_file: Path | None, validate: bool) -> TlsResult:
    """Handshake with validation (as pypsrp/requests does it), then read the certificate."""
    names, expires = _peer_certificate(address, port)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not validate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=address),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        code = exc.verify_code
        problem = {
            _HOSTNAME_MISMATCH: "name",
            _IP_MISMATCH: "name",
            _EXPIRED: "expired",
            _NOT_YET_VALID: "expired",
        }.get(code, "untrusted")
        return TlsResult(False, problem, exc.verify_message or str(exc), names, expires)
    except (ssl.SSLError, OSError) as exc:
        return TlsResult(False, "handshake", str(exc), names, expires)
    return TlsResult(True, "", "", names, expires)


def _peer_certificate(address: str, port: int) -> tuple[list[str], datetime.datetime | None]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=_sni(address)) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return [], None
    if not der:
        return [], None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + [
            f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        names = []
    return names, cert.not_valid_after_utc


def _sni(address: str) -> str | None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return address
    return None  # no SNI for an IP address
