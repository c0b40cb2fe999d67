"""Logon for the lab endpoint: the NTLM accounts pyspnego's acceptor reads, and TLS channel
binding (tls-server-end-point) as a Windows listener checks it."""

from __future__ import annotations

import threading
from pathlib import Path


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
