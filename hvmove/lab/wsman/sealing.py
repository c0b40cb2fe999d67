"""WinRM message encryption over HTTP (MS-WSMV 2.2.9.1): unseal requests, seal replies."""

from __future__ import annotations

import re
import struct
from typing import Any

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
