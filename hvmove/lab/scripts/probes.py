"""Lab scripts that measure or test without moving anything: Get-OdxStatus, Measure-Bandwidth
and Get-VHDFacts."""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from pathlib import PureWindowsPath
from typing import Any

from hvmove import models
from hvmove.lab import vhd
from hvmove.lab.engine import guest_disk
from hvmove.lab.estate import PathError, norm
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import ScriptFailed


class ProbeScripts(ScriptBase):
    @script("Get-OdxStatus")
    def odx_status(self, host: str, p: dict[str, Any]) -> models.OdxStatus:
        h = self.estate.host(host)
        try:
            src = self.estate.volume_of(host, str(p.get("SourcePath", "")))
            dst = self.estate.volume_of(host, str(p.get("DestinationPath", "")))
        except PathError as exc:
            raise ScriptFailed(str(exc), "PathNotFound", "ObjectNotFound") from None
        # Get-Volume failing leaves the file system unknown; the script says so, naming the
        # volume and the error, instead of judging NTFS from an empty name
        unknown = "; ".join(
            f"Get-Volume failed for the {label} volume {vol.root}: {vol.get_volume_error}"
            for label, vol in (("SourcePath", src), ("DestinationPath", dst))
            if vol.get_volume_error and vol.kind != "smb"
        )
        ntfs = src.file_system == "NTFS" and dst.file_system == "NTFS" and not unknown
        # only the filters attached to the two volumes count, not every loaded one: the check
        # Microsoft documents is `fltmc instances -v <volume>`, SprtFtrs bits 0x1 and 0x2
        # ("Deploy Windows Offloaded Data Transfers", technet.microsoft.com/library/jj200627)
        opted_out = [
            f"{name} on {vol.root} (SprtFtrs 0x{features:x})"
            for vol in ([src] if src is dst else [src, dst])
            for name, features in vol.filters.items()
            if features & 3 != 3
        ]
        filters_ok = not opted_out
        same_array = bool(src.array) and src.array == dst.array
        odx = h.odx_os_enabled and ntfs and filters_ok and src.odx and dst.odx and same_array
        if not h.odx_os_enabled:
            reason = "ODX is disabled on the host (FilterSupportedFeaturesMode = 1)"
        elif unknown:
            reason = f"the file system of a volume is unknown, so ODX cannot be judged: {unknown}"
        elif not ntfs:
            reason = "ODX needs NTFS on both volumes"
        elif not filters_ok:
            reason = (
                "minifilters attached to the volumes do not opt in to offload read/write: "
                + ", ".join(opted_out)
            )
        elif not (src.odx and dst.odx):
            reason = "a volume's storage does not support ODX"
        elif not same_array:
            reason = "source and destination are on different storage arrays"
        else:
            reason = f"both volumes are on ODX-capable array {src.array}"
        return models.OdxStatus(
            source_volume=src.root,
            destination_volume=dst.root,
            os_enabled=h.odx_os_enabled,
            filters_ok=filters_ok,
            source_array=src.array,
            destination_array=dst.array,
            odx=odx,
            reason=reason,
        )

    @script("Measure-Bandwidth")
    def bandwidth(self, host: str, p: dict[str, Any]) -> models.BandwidthProbe:
        dest = str(p.get("DestinationPath", ""))
        size_mib = int(p.get("SizeMiB", 256) or 256)
        if self._double_hop(host, dest):
            raise ScriptFailed(
                f"Access to the path '{dest}' is denied.", "UnauthorizedAccess", "PermissionDenied"
            )
        vol = self._volume(host, dest)
        # like the script: write into the nearest folder that exists, create nothing
        probe_dir = dest
        folder = self._local(host, probe_dir)
        while not folder.is_dir():
            parent = str(PureWindowsPath(probe_dir).parent)
            if parent == probe_dir:
                break
            probe_dir, folder = parent, self._local(host, parent)
        scale = self.estate.settings.size_scale
        logical = size_mib * 1024 * 1024
        real = max(4096, logical // scale)
        if self.estate.free_bytes(vol) < logical:
            raise ScriptFailed(
                "There is not enough space on the disk. (0x80070070)", "IOException", "WriteError"
            )
        name = f"hvmove-probe-{uuid.uuid4().hex}.tmp"
        target = folder / name
        fabric = self.engine.fabric
        flow = f"probe|{name}"
        # a probe is a host copy on one volume: it shares the volume (and its array) with moves.
        # Its times are the fluid's (Fabric.paid_at), not the wall clock's: at the lab's time
        # scale a 4 GiB probe lasts 30-90 ms, and a thread woken 10 ms late on a busy machine (the
        # night's prechecks, 80 at once on 2 cores) read as a volume 10-30 % slower than the
        # model, which the planner then believed all night. On a host the probe lasts seconds.
        fabric.open(flow, vol, vol, offload=False)
        try:
            t0 = time.perf_counter()
            with open(target, "wb") as fh:
                remaining = real
                while remaining > 0:
                    n = min(1024 * 1024, remaining)
                    fh.write(os.urandom(n))
                    fabric.take(flow, logical * n / real)  # the logical bytes, not the floor
                    remaining -= n
                fh.flush()
                os.fsync(fh.fileno())
            t1 = time.perf_counter()
            began, written = fabric.began(flow), fabric.paid_at(flow)
            with open(target, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    fabric.take(flow, logical * len(chunk) / real)
            t2 = time.perf_counter()
            read = fabric.paid_at(flow)
            if not math.isinf(fabric.rate(flow)):
                t0, t1, t2 = began, written, read
        finally:
            fabric.close(flow)
            target.unlink(missing_ok=True)
        write_s, read_s = max(t1 - t0, 1e-6), max(t2 - t1, 1e-6)
        return models.BandwidthProbe(
            path=str(PureWindowsPath(probe_dir, name)),
            bytes=logical,
            write_seconds=round(write_s, 4),
            read_seconds=round(read_s, 4),
            write_mbps=round(logical / write_s / 1e6, 1),
            read_mbps=round(logical / read_s / 1e6, 1),
        )

    @script("Get-VHDFacts")
    def vhd_facts(self, host: str, p: dict[str, Any]) -> models.VhdReport:
        attached = {
            norm(guest_disk(vm) or ""): vm.id
            for vm in self.estate.vms_on(host)
            if vm.state == "Running"
        }
        out = []
        for path in as_list(p.get("Path")):
            local = self._local(host, path)
            if not local.exists():
                out.append(models.VhdCheck(path=path, exists=False))
                continue
            # a disk in use is read between two guest writes, not in the middle of one
            owner = attached.get(norm(path))
            lock = self.engine.disk_lock(owner) if owner else contextlib.nullcontext()
            with lock:
                problem = vhd.check(local, lambda parent: self._local(host, parent))
            try:
                # Test-HvmVhd and Get-HvmVhd: literal for names with [ ] * ? '
                info = self._hvm_vhd(host, path, norm(path) in attached)
            except (vhd.VhdCorrupt, ValueError, TypeError, ScriptFailed) as exc:
                out.append(models.VhdCheck(path=path, exists=True, test_ok=False, error=str(exc)))
                continue
            out.append(
                models.VhdCheck(
                    path=path, exists=True, test_ok=not problem, vhd=info, error=problem
                )
            )
        return models.VhdReport(disks=out)
