"""Inventory snapshots: what every host held at one moment, kept in the store for capacity analysis.

One snapshot is one row in ``snapshots`` plus a row per volume, per VM and per disk file. A host
that did not answer gets no rows at all rather than zeros, so a fill chart shows a gap instead of
an empty volume.

Attachments that block a storage move are kept as disk rows with zero bytes and a type of their
own (``BLOCKER_TYPES``): an attached ISO (its path), a pass-through disk (``Disk N``) and a shared
VHDX (its path, beside its ordinary row). A rebalancing proposal must not pick such a VM, and the
VM snapshot has no column to say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import PureWindowsPath

from hvmove import models
from hvmove.inventory import HostInventory
from hvmove.store import DiskSnapshot, Snapshot, Store, VMSnapshot, VolumeSnapshot, utcnow

ISO, PASS_THROUGH, SHARED_VHDX = "ISO", "PassThrough", "SharedVHDX"
BLOCKER_TYPES = (ISO, PASS_THROUGH, SHARED_VHDX)


def _key(path: str) -> str:
    """Case-insensitive comparison key with exactly one trailing backslash."""
    return path.replace("/", "\\").rstrip("\\").lower() + "\\"


def volume_for(path: str, roots: Iterable[str]) -> str:
    """The root among ``roots`` that holds ``path`` (the longest prefix, since a CSV such as
    ``C:\\ClusterStorage\\Volume1\\`` sits inside ``C:\\``). Falls back to the path's own anchor
    (drive or share) so a disk on a volume the host did not report is still attributed."""
    key = _key(path)
    best, best_len = "", 0
    for root in roots:
        rk = _key(root)
        if key.startswith(rk) and len(rk) > best_len:
            best, best_len = root, len(rk)
    return best or PureWindowsPath(path).anchor


def vm_file_bytes(vm: models.VMInfo) -> int:
    """What moving the VM copies: every disk file of every chain plus its configuration."""
    return sum(v.file_size for v in vm.vhd_files()) + vm.config_bytes


def vm_virtual_bytes(vm: models.VMInfo) -> int:
    """What the VM's attached disks may grow to (dynamic disks grow up to their virtual size)."""
    return sum(d.chain[0].size for d in vm.drives if d.chain)


def blockers(vm: models.VMInfo) -> list[tuple[str, str]]:
    """(type, path) of each attachment that stops a storage move of ``vm``."""
    found = [(ISO, p) for p in vm.dvd_paths]
    for d in vm.drives:
        if d.pass_through:
            found.append((PASS_THROUGH, f"Disk {d.disk_number}"))
        elif d.shared and d.path:
            found.append((SHARED_VHDX, d.path))
    return found


def record_snapshot(
    store: Store,
    hosts: list[HostInventory],
    source: str = "inventory",
    taken_at: datetime | None = None,
) -> int:
    """Write one snapshot of ``hosts`` and return its id."""
    when = taken_at or utcnow()
    # SQLite keeps the wall-clock digits and drops the offset, so only UTC survives every backend;
    # a naive time is taken to be UTC already
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    with store.session() as s:
        snap = Snapshot(taken_at=when, source=source)
        s.add(snap)
        s.flush()  # the id is needed for the child rows
        rows: list[VolumeSnapshot | VMSnapshot | DiskSnapshot] = []
        for inv in hosts:
            if inv.error:
                continue
            roots = [v.volume for v in inv.volumes]
            for v in inv.volumes:
                rows.append(
                    VolumeSnapshot(
                        snapshot_id=snap.id,
                        host=inv.name,
                        volume=v.volume,
                        kind=v.kind,
                        capacity=v.capacity,
                        free=v.free,
                        cluster=inv.facts.cluster_name if inv.facts else None,
                    )
                )
            for vm in inv.vms:
                rows.append(
                    VMSnapshot(
                        snapshot_id=snap.id,
                        host=inv.name,
                        vm_id=vm.id,
                        vm_name=vm.name,
                        state=vm.state,
                        volume=volume_for(vm.configuration_location, roots),
                        file_bytes=vm_file_bytes(vm),
                        virtual_bytes=vm_virtual_bytes(vm),
                    )
                )
                for vhd in vm.vhd_files():
                    rows.append(
                        DiskSnapshot(
                            snapshot_id=snap.id,
                            host=inv.name,
                            vm_id=vm.id,
                            path=vhd.path,
                            volume=volume_for(vhd.path, roots),
                            type=vhd.type,
                            file_size=vhd.file_size,
                            size=vhd.size,
                        )
                    )
                for kind, path in blockers(vm):
                    rows.append(
                        DiskSnapshot(
                            snapshot_id=snap.id,
                            host=inv.name,
                            vm_id=vm.id,
                            path=path,
                            volume=volume_for(path, roots) if kind != PASS_THROUGH else "",
                            type=kind,
                            file_size=0,
                            size=0,
                        )
                    )
        s.add_all(rows)
        return snap.id
