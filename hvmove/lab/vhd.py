"""The lab's virtual disk files: real files with a header, a checksum table and data blocks.

Layout (real bytes): a 4 KiB header (magic, JSON metadata, CRC32 of the header), a table of one
CRC32 per block (padded to 4 KiB), then the blocks. ``Test-VHD`` in the lab checks the magic, the
header CRC, the file length, every block against its CRC, and the parent chain, so a torn copy or
a corrupted block is caught the way a real integrity check would catch it. Sizes reported to the
orchestrator are logical: real bytes times the lab's size scale.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

HEADER = 4096
BLOCK = 64 * 1024
MAGIC = {"VHDX": b"vhdxfile", "VHD": b"conectix", "VHDSet": b"vhdsfile"}
_FORMAT_BY_MAGIC = {v: k for k, v in MAGIC.items()}


class VhdCorrupt(Exception):
    pass


@dataclass
class VhdHeader:
    format: str
    type: str  # Fixed | Dynamic | Differencing
    size: int  # virtual size, logical bytes
    disk_identifier: str
    parent_path: str | None  # Windows path of the parent (differencing disks)
    blocks: int
    block_size: int = BLOCK

    @property
    def table_bytes(self) -> int:
        raw = self.blocks * 4
        return (raw + HEADER - 1) // HEADER * HEADER

    @property
    def data_offset(self) -> int:
        return HEADER + self.table_bytes

    @property
    def file_bytes(self) -> int:
        return self.data_offset + self.blocks * self.block_size

    def block_offset(self, index: int) -> int:
        return self.data_offset + index * self.block_size

    def encode(self) -> bytes:
        magic = MAGIC[self.format]
        body = json.dumps(asdict(self), separators=(",", ":")).encode()
        raw = magic + struct.pack("<I", len(body)) + body
        if len(raw) > HEADER - 4:
            raise ValueError("header too long")
        raw = raw.ljust(HEADER - 4, b"\0")
        return raw + struct.pack("<I", zlib.crc32(raw))


def read_header(path: Path) -> VhdHeader:
    with open(path, "rb") as fh:
        raw = fh.read(HEADER)
    if len(raw) < HEADER:
        raise VhdCorrupt("file shorter than its header")
    (crc,) = struct.unpack("<I", raw[-4:])
    if zlib.crc32(raw[:-4]) != crc:
        raise VhdCorrupt("header checksum mismatch")
    fmt = _FORMAT_BY_MAGIC.get(raw[:8])
    if fmt is None:
        raise VhdCorrupt("not a virtual hard disk (bad signature)")
    (length,) = struct.unpack("<I", raw[8:12])
    meta = json.loads(raw[12 : 12 + length])
    return VhdHeader(**meta)


def rewrite_parent(path: Path, parent_path: str | None) -> None:
    """Point a differencing disk at its parent's new location (Hyper-V updates parent locators)."""
    header = read_header(path)
    header.parent_path = parent_path
    with open(path, "r+b") as fh:
        fh.write(header.encode())


def block_pattern(seed: bytes, size: int) -> bytes:
    """Deterministic bytes for a block, distinct per seed (cheap: a repeated CRC-derived word)."""
    word = zlib.crc32(seed).to_bytes(4, "little") + seed[:12].ljust(12, b"\0")
    return (word * (size // len(word) + 1))[:size]


def create(path: Path, header: VhdHeader, *, fill_seed: str) -> None:
    """Write a complete, valid disk file. Block contents depend on fill_seed and block index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = bytearray()
    with open(path, "wb") as fh:
        fh.write(header.encode())
        fh.write(b"\0" * header.table_bytes)
        for i in range(header.blocks):
            data = block_pattern(f"{fill_seed}:{i}".encode(), header.block_size)
            table += struct.pack("<I", zlib.crc32(data))
            fh.write(data)
        fh.seek(HEADER)
        fh.write(bytes(table))


def write_block(fh: object, header: VhdHeader, index: int, data: bytes) -> int:
    """Write one block and its checksum through an open r+b handle; returns the CRC."""
    crc = zlib.crc32(data)
    fh.seek(header.block_offset(index))  # type: ignore[attr-defined]
    fh.write(data)  # type: ignore[attr-defined]
    fh.seek(HEADER + index * 4)  # type: ignore[attr-defined]
    fh.write(struct.pack("<I", crc))  # type: ignore[attr-defined]
    return crc


def block_crcs(path: Path) -> list[int]:
    """CRC of each block's actual data (not the table): what the guest would read back."""
    header = read_header(path)
    out = []
    with open(path, "rb") as fh:
        fh.seek(header.data_offset)
        for _ in range(header.blocks):
            out.append(zlib.crc32(fh.read(header.block_size)))
    return out


def check(path: Path, resolve_parent: object = None, _depth: int = 0) -> str:
    """Test-VHD: '' when the file and its parent chain are sound, else the problem."""
    if _depth > 64:
        return "parent chain too deep (loop?)"
    try:
        header = read_header(path)
    except (OSError, VhdCorrupt, ValueError, TypeError) as exc:
        return f"{path.name}: {exc}"
    actual = os.path.getsize(path)
    if actual != header.file_bytes:
        return f"{path.name}: file is {actual} bytes, header says {header.file_bytes}"
    with open(path, "rb") as fh:
        fh.seek(HEADER)
        table = fh.read(header.blocks * 4)
        fh.seek(header.data_offset)
        for i in range(header.blocks):
            data = fh.read(header.block_size)
            (want,) = struct.unpack_from("<I", table, i * 4)
            if zlib.crc32(data) != want:
                return f"{path.name}: block {i} checksum mismatch"
    if header.type == "Differencing":
        if not header.parent_path:
            return f"{path.name}: differencing disk without a parent"
        parent = resolve_parent(header.parent_path) if callable(resolve_parent) else None
        if parent is None or not Path(parent).exists():
            return f"{path.name}: parent {header.parent_path} not found"
        problem = check(Path(parent), resolve_parent, _depth + 1)
        if problem:
            return problem
    return ""
