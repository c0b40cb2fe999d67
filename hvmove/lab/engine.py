"""Hyper-V's storage move, as the lab performs it, plus the guests that keep writing meanwhile.

A move copies every file of the request at its share of the volumes' and arrays' bandwidth
(``bandwidth.Fabric``: the model of ``hvmove.throughput``, much faster inside one ODX array),
mirrors the guest's writes to both copies, switches the VM to the destination at the end, and
then deletes or retains the source. A failure or a cancel removes the partial destination and
leaves the VM on its source. Jobs live in this process: a client crash does not stop them, and a
lab restart (a host reboot) ends them without cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from hvmove import models
from hvmove.lab import bandwidth, vhd
from hvmove.lab.estate import Estate, LabVM, LabVolume, norm

log = logging.getLogger("hvmove.lab.engine")

CHUNK = 8 * 1024 * 1024  # most real bytes copied per step (under the VM's disk lock)
E_DISK_FULL = 0x80070070
E_FAILED = 0x80004005
E_CORRUPT = 0x8007048F
TAMPER = {"change_identifier", "change_size", "change_parent", "detach_disk", "lose_heartbeat"}


class Aborted(Exception):
    """Internal: the move stops (cancel, fault, reboot)."""

    def __init__(self, state: str, code: int, message: str, cleanup: bool = True) -> None:
        super().__init__(message)
        self.state, self.code, self.message, self.cleanup = state, code, message, cleanup


@dataclass
class CopyItem:
    src: str  # Windows paths
    dst: str
    is_vhd: bool
    parent_dst: str | None = None  # new parent locator for a differencing disk
    is_parent: bool = False  # another disk of the move has it as parent (read-only in a chain)
    # a parent the request did not name, carried beside its child (premise
    # unnamed_parents_move_with_child): an "unmanaged VHD", whose source copy Hyper-V deletes
    # only with -RemoveSourceUnmanagedVhds (move-vmstorage), which hvmove never passes
    unmanaged: bool = False


@dataclass
class Job:
    job_id: str
    vm_id: str
    host: str
    items: list[CopyItem]
    new_paths: dict[str, str]  # component -> new Windows path (config/snapshot/smart paging)
    retain: bool  # RetainVhdCopiesOnSource: keep the parent (read-only) disks on the source
    avoid_removing: bool = False  # AvoidRemovingVHDs: remove no VHD, source or destination
    state: str = "Starting"
    percent: int = 0
    error_code: int = 0
    error_description: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    cancellable: bool = True
    # a 'refuse_stop' fault reached its percent: RequestStateChange(4) answers 32775
    refuses_stop: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    created: list[Path] = field(default_factory=list)

    def to_model(self) -> models.MoveJob:
        end = self.ended or time.time()
        return models.MoveJob(
            job_id=self.job_id,
            vm_id=self.vm_id,
            job_state=self.state,  # type: ignore[arg-type]
            percent_complete=self.percent,
            error_code=self.error_code,
            error_description=self.error_description,
            start_time=datetime.fromtimestamp(self.started, UTC).isoformat(),
            elapsed_seconds=round(end - self.started, 3),
            cancellable=self.cancellable,
        )

    @property
    def running(self) -> bool:
        return self.state in ("New", "Starting", "Running")


class Guest:
    """A running VM's workload: writes blocks of its current disk, journals each acknowledged one.

    The journal (``guests/<vm id>.journal``: seq, block, crc) is what the guest believes is
    on its disk; ``lost_writes`` compares it with the disk the VM uses now.
    """

    def __init__(self, engine: Engine, vm_id: str) -> None:
        self.engine = engine
        self.vm_id = vm_id
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"guest-{vm_id[:8]}", daemon=True)
        self.journal = engine.estate.dir / "guests" / f"{vm_id}.journal"
        self.journal.parent.mkdir(exist_ok=True)
        self.seq = _last_seq(self.journal)
        self.rng = random.Random(vm_id)

    def _loop(self) -> None:
        while not self.stop.is_set():
            vm = self.engine.find_vm(self.vm_id)
            if vm is None or vm.state != "Running":
                return
            if not self.pause.is_set():
                try:
                    self.write_once(vm)
                except Exception:
                    log.exception("guest %s write failed", vm.name)
            self.stop.wait(vm.guest_interval_s)

    def write_once(self, vm: LabVM) -> None:
        with self.engine.disk_lock(vm.id):
            path = guest_disk(vm)  # read under the lock: the move may have just switched it
            if path is None:
                return
            real = self.engine.estate.local(vm.host, path)
            header = vhd.read_header(real)
            index = self.rng.randrange(header.blocks)
            self.seq += 1
            data = vhd.block_pattern(f"{vm.id}:{self.seq}".encode(), header.block_size)
            with open(real, "r+b") as fh:
                crc = vhd.write_block(fh, header, index, data)
            mirror = self.engine.mirrors.get(norm(path))
            if mirror is not None:
                with open(mirror, "r+b") as fh:
                    vhd.write_block(fh, header, index, data)
            with open(self.journal, "a", encoding="ascii") as jf:
                jf.write(f"{self.seq} {index} {crc}\n")


def _copy_range(fin: BinaryIO, fout: BinaryIO, offset: int, n: int) -> None:
    """Copy n bytes at offset; in the kernel (copy_file_range) where the platform has it."""
    if _HAS_COPY_RANGE:
        while n > 0:
            done = os.copy_file_range(fin.fileno(), fout.fileno(), n, offset, offset)
            if done <= 0:
                break
            offset, n = offset + done, n - done
        if n == 0:
            return
    fin.seek(offset)
    data = fin.read(n)
    fout.seek(offset)
    fout.write(data)


_HAS_COPY_RANGE = hasattr(os, "copy_file_range")


def guest_disk(vm: LabVM) -> str | None:
    """The disk a guest writes to: its first ordinary (not pass-through, not shared) drive."""
    for d in vm.drives:
        if d.path and d.disk_number is None and not d.shared:
            return d.path
    return None


def _last_seq(journal: Path) -> int:
    if not journal.exists():
        return 0
    last = 0
    with open(journal, encoding="ascii") as fh:
        for line in fh:
            if line.strip():
                last = int(line.split()[0])
    return last


class Engine:
    def __init__(self, estate: Estate) -> None:
        self.estate = estate
        self.jobs: list[Job] = []
        self.jobs_lock = threading.Lock()
        self.fabric = bandwidth.Fabric(estate)  # the volumes' and arrays' shared bandwidth
        self.mirrors: dict[str, Path] = {}  # norm(source path) -> real destination file
        self._disk_locks: dict[str, threading.RLock] = {}
        self.guests: dict[str, Guest] = {}
        self.faults: list[dict] = []  # engine faults: see inject()
        self.down = threading.Event()  # set on reboot: every job thread stops without cleanup

    # -- plumbing --------------------------------------------------------------------------------
    def disk_lock(self, vm_id: str) -> threading.RLock:
        with self.jobs_lock:
            return self._disk_locks.setdefault(vm_id, threading.RLock())

    def find_vm(self, vm_id: str) -> LabVM | None:
        for vm in self.estate.data.vms:
            if vm.id == vm_id:
                return vm
        return None

    def start_guests(self) -> None:
        if not self.estate.settings.guests:
            return
        for vm in self.estate.data.vms:
            if vm.state == "Running" and vm.id not in self.guests:
                guest = Guest(self, vm.id)
                self.guests[vm.id] = guest
                guest.thread.start()

    def shutdown(self) -> None:
        """A host reboot or lab stop: jobs end where they are, guests stop."""
        self.down.set()
        for guest in self.guests.values():
            guest.stop.set()
        for job in list(self.jobs):
            job.cancel.set()

    def inject(self, fault: dict) -> None:
        """Engine faults: {'kind': 'fail_at'|'dest_full'|'corrupt_block'|'reboot_at', 'vm': id or
        name (optional), 'percent': N}. Each is used by the next matching move. The kinds in
        TAMPER change the moved VM after its switch, for verification to catch.

        'refuse_stop' ({'percent': N, default 0; 'cancellable': bool, default false}): from N %
        on, the job refuses Stop-StorageMove's RequestStateChange(4) with 32775 "Invalid state
        for this operation" (return values: learn.microsoft.com/windows/win32/hyperv_v2/
        requeststatechange-msvm-migrationjob, listed with GetError's) and copies on to its
        switch. With 'cancellable' false the job also says Cancellable = false, Hyper-V's own
        word that it is past the point of no return; true models the race the documentation
        allows: Cancellable "does not guarantee the cancel succeeds" (msvm-migrationjob)."""
        kinds = {"fail_at", "dest_full", "corrupt_block", "reboot_at", "refuse_stop", *TAMPER}
        if fault.get("kind") not in kinds:
            raise ValueError(f"engine fault kind must be one of {sorted(kinds)}")
        with self.jobs_lock:
            self.faults.append(dict(fault))

    def _take_fault(self, vm: LabVM) -> dict | None:
        with self.jobs_lock:
            for f in self.faults:
                target = f.get("vm")
                if target in (None, vm.id, vm.name):
                    self.faults.remove(f)
                    return f
        return None

    # -- jobs ------------------------------------------------------------------------------------
    def jobs_of(self, vm_id: str) -> list[Job]:
        self._expire()
        with self.jobs_lock:
            return [j for j in self.jobs if j.vm_id.lower() == vm_id.lower()]

    def newest_job(self, vm_id: str) -> Job | None:
        jobs = self.jobs_of(vm_id)
        return max(jobs, key=lambda j: j.started) if jobs else None

    def running_on(self, host: str) -> int:
        with self.jobs_lock:
            return sum(1 for j in self.jobs if j.host.lower() == host.lower() and j.running)

    def _expire(self) -> None:
        keep = self.estate.settings.job_retention_s
        now = time.time()
        with self.jobs_lock:
            self.jobs = [j for j in self.jobs if j.ended is None or now - j.ended < keep]

    def submit(self, job: Job) -> None:
        vm = self.find_vm(job.vm_id)
        assert vm is not None
        # taken here, not in the job's thread: a fault that applies from 0 % holds from the
        # moment Start-StorageMove returns the job
        fault = self._take_fault(vm)
        self._refuse_stop(job, fault, 0)
        with self.jobs_lock:
            self.jobs.append(job)
        threading.Thread(
            target=self._run, args=(job, vm, fault), name=f"move-{job.vm_id[:8]}", daemon=True
        ).start()

    @staticmethod
    def _refuse_stop(job: Job, fault: dict | None, percent: int) -> None:
        if fault and fault["kind"] == "refuse_stop" and percent >= int(fault.get("percent", 0)):
            job.refuses_stop = True
            job.cancellable = bool(fault.get("cancellable", False))

    def _run(self, job: Job, vm: LabVM, fault: dict | None) -> None:
        try:
            job.state = "Running"
            self._copy_all(job, vm, fault)
            if fault and fault["kind"] == "corrupt_block":
                self._corrupt(job)
            self._switch(job, vm)
            job.cancellable = False
            self._finish_source(job, vm)
            if fault and fault["kind"] in TAMPER:
                self._tamper(job, vm, fault["kind"])
            job.percent = 100
            job.state = "Completed"
        except Aborted as stop:
            job.state, job.error_code, job.error_description = stop.state, stop.code, stop.message
            self._unmirror(job)
            if stop.cleanup:
                self._remove_partial(job)
        except Exception as exc:
            log.exception("move of %s failed", job.vm_id)
            job.state, job.error_code, job.error_description = "Exception", E_FAILED, str(exc)
            self._unmirror(job)
            self._remove_partial(job)
        finally:
            job.ended = time.time()

    def _copy_all(self, job: Job, vm: LabVM, fault: dict | None) -> None:
        est = self.estate
        sources = [est.local(vm.host, it.src) for it in job.items]
        total = sum(os.path.getsize(p) for p in sources) or 1
        # about a hundred steps per move so percent, cancel and faults have a fine grain
        # (page-aligned: the kernel copies whole pages fastest)
        step = max(64 * 1024, min(CHUNK, total // 100) // 65536 * 65536)
        done = 0
        attempt = sum(1 for j in self.jobs_of(vm.id) if j is not job)
        for item, src in zip(job.items, sources, strict=True):
            dst = est.local(vm.host, item.dst)
            if dst.exists():
                raise Aborted("Exception", 0x80070050, f"The file '{item.dst}' already exists.")
            src_vol = est.volume_of(vm.host, item.src)
            dst_vol = est.volume_of(vm.host, item.dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            size = os.path.getsize(src)
            # created empty and filled in order (appending beats writing into a sparse file);
            # a mirrored guest write ahead of the copy just lands beyond the end for now
            dst.touch()
            job.created.append(dst)
            lock = self.disk_lock(vm.id)
            with lock:
                self.mirrors[norm(item.src)] = dst
            flow = f"{job.job_id}|{item.dst}"
            eff = bandwidth.efficiency(est, vm.id, src_vol, dst_vol, attempt)
            self.fabric.open(flow, src_vol, dst_vol, eff)
            try:
                self._copy_file(job, fault, src, dst, size, (done, total, step), dst_vol, flow)
            finally:
                self.fabric.close(flow)
            done += size
            if item.is_vhd and item.parent_dst is not None:
                with lock:
                    vhd.rewrite_parent(dst, item.parent_dst)

    def _copy_file(
        self,
        job: Job,
        fault: dict | None,
        src: Path,
        dst: Path,
        size: int,
        progress: tuple[int, int, int],
        dst_vol: LabVolume,
        flow: str,
    ) -> None:
        done, total, step = progress
        scale = self.estate.settings.size_scale
        lock = self.disk_lock(job.vm_id)
        offset = 0
        with open(src, "rb") as fin, open(dst, "r+b") as fout:
            while offset < size:
                n = min(step, size - offset)
                percent = int(100 * (done + offset) / total)
                self._check(job, fault, percent, dst_vol, n * scale)
                with lock:
                    _copy_range(fin, fout, offset, n)
                # the copy's share of its volumes and arrays, recomputed as copies come and go
                # (and as a volume slows down or speeds up in the middle of a move)
                self.fabric.take(flow, n * scale)
                offset += n
                job.percent = min(99, int(100 * (done + offset) / total))

    def _check(
        self, job: Job, fault: dict | None, percent: int, dst_vol: LabVolume, n: int
    ) -> None:
        if self.down.is_set():
            raise Aborted("Killed", E_FAILED, "host restarted", cleanup=False)
        if job.cancel.is_set():
            raise Aborted("Terminated", 0, "The operation was cancelled.")
        self._refuse_stop(job, fault, percent)
        if fault and fault["kind"] != "refuse_stop" and percent >= int(fault.get("percent", 50)):
            kind = fault["kind"]
            if kind == "fail_at":
                raise Aborted(
                    "Exception",
                    E_FAILED,
                    f"Storage migration failed at {percent}% (injected I/O error, 0x80004005).",
                )
            if kind == "dest_full":
                raise Aborted(
                    "Exception", E_DISK_FULL, "There is not enough space on the disk. (0x80070070)"
                )
            if kind == "reboot_at":
                fault["kind"] = "spent"
                threading.Thread(target=self.on_reboot, args=(job.host,), daemon=True).start()
                time.sleep(0.5)
                raise Aborted("Killed", E_FAILED, "host restarted", cleanup=False)
        if self.estate.free_bytes(dst_vol) < n:
            raise Aborted(
                "Exception", E_DISK_FULL, "There is not enough space on the disk. (0x80070070)"
            )

    def _tamper(self, job: Job, vm: LabVM, kind: str) -> None:
        """What verification exists to catch, done to the destination after the switch: a disk
        with another identifier, size or parent, a disk no longer attached, a lost heartbeat."""
        moved = [(it, self.estate.local(vm.host, it.dst)) for it in job.items if it.is_vhd]
        with self.disk_lock(vm.id), self.estate.lock:
            if kind == "lose_heartbeat":
                vm.heartbeat = "LostCommunication"
            elif kind == "detach_disk":
                vm.drives = [d for d in vm.drives if not d.path or d.path == guest_disk(vm)]
            elif moved:
                target = next((p for it, p in moved if it.parent_dst), moved[0][1])
                header = vhd.read_header(target)
                if kind == "change_identifier":
                    header.disk_identifier = str(uuid.uuid4()).upper()
                elif kind == "change_size":
                    header.size += 1024**3
                elif kind == "change_parent" and header.parent_path:
                    # to its grandparent's new copy: a chain that skips a link, all at the
                    # destination, so only the parent comparison can see it
                    parent = next(it for it in job.items if it.dst == header.parent_path)
                    header.parent_path = parent.parent_dst or parent.dst
                with open(target, "r+b") as fh:
                    fh.write(header.encode())
            self.estate.save()

    def on_reboot(self, host: str) -> None:
        """Replaced by the server: restarts the whole lab process state for a host."""

    def _corrupt(self, job: Job) -> None:
        target = next((p for it, p in zip(job.items, job.created, strict=False) if it.is_vhd), None)
        if target is None:
            return
        header = vhd.read_header(target)
        with open(target, "r+b") as fh:
            fh.seek(header.block_offset(header.blocks // 2) + 100)
            fh.write(os.urandom(64))
            # and a torn tail: the guest keeps writing whole blocks (through the mirror, then on
            # the new disk) and would heal a corrupt block before Test-VHD looks; this it cannot
            fh.seek(0, os.SEEK_END)
            fh.write(os.urandom(512))

    def _switch(self, job: Job, vm: LabVM) -> None:
        job.cancellable = False
        with self.disk_lock(vm.id), self.estate.lock:
            if self.down.is_set():
                raise Aborted("Killed", E_FAILED, "host restarted", cleanup=False)
            mapping = {norm(it.src): it.dst for it in job.items if it.is_vhd}
            for drive in vm.drives:
                if drive.path and norm(drive.path) in mapping:
                    drive.path = mapping[norm(drive.path)]
            for cp in vm.checkpoints:
                cp.disk_paths = [mapping.get(norm(p), p) for p in cp.disk_paths]
            vm.configuration_location = job.new_paths.get(
                "configuration", vm.configuration_location
            )
            vm.snapshot_file_location = job.new_paths.get("snapshot", vm.snapshot_file_location)
            vm.smart_paging_file_path = job.new_paths.get("smart_paging", vm.smart_paging_file_path)
            self._unmirror(job)
            self.estate.save()

    def _unmirror(self, job: Job) -> None:
        with self.disk_lock(job.vm_id):
            for it in job.items:
                self.mirrors.pop(norm(it.src), None)

    def _finish_source(self, job: Job, vm: LabVM) -> None:
        """After the switch Hyper-V removes the source copy of every moved disk: "If not
        specified, all virtual hard disks will be removed from the source computer once the
        virtual machine is successfully moved" (Move-VMStorage -RetainVhdCopiesOnSource,
        learn.microsoft.com/powershell/module/hyper-v/move-vmstorage). RetainVhdCopiesOnSource
        keeps only "the read-only VHDs on the source host" (parents); AvoidRemovingVHDs keeps every
        VHD: "Do not remove any VHDs during the migration, i.e. VHDs on the source in success"
        (learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemmigrationsettingdata)."""
        # issue 11: the lab's premises can make either answer come out, for `hvmove canary`
        premises = self.estate.settings.premises
        keep_all = job.avoid_removing and premises.avoid_removing_vhds_honoured
        keep_all |= not job.avoid_removing and not premises.move_vmstorage_removes_source
        for it in job.items:
            if it.is_vhd and (keep_all or it.unmanaged or (job.retain and it.is_parent)):
                continue
            with contextlib.suppress(FileNotFoundError):
                self.estate.local(vm.host, it.src).unlink()

    def _remove_partial(self, job: Job) -> None:
        """A failed or cancelled move removes what it created at the destination, except the
        VHDs when AvoidRemovingVHDs was set ("... and VHDs on the destination in failure",
        msvm-virtualsystemmigrationsettingdata): those stay for the caller to remove."""
        for it, path in zip(job.items, job.created, strict=False):
            if it.is_vhd and job.avoid_removing:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- guest checks ----------------------------------------------------------------------------
    def lost_writes(self, vm_id: str) -> dict:
        """Compare the guest journal with the VM's current disk: writes the disk does not hold."""
        vm = self.find_vm(vm_id)
        if vm is None:
            raise ValueError(f"no VM {vm_id}")
        guest = self.guests.get(vm_id)
        if guest is not None:
            guest.pause.set()
        try:
            with self.disk_lock(vm_id):
                path = guest_disk(vm)
                if path is None:
                    return {"vm": vm.name, "writes": 0, "lost": 0, "blocks_checked": 0}
                crcs = vhd.block_crcs(self.estate.local(vm.host, path))
                journal = self.estate.dir / "guests" / f"{vm_id}.journal"
                last: dict[int, int] = {}
                writes = 0
                if journal.exists():
                    for line in journal.read_text(encoding="ascii").splitlines():
                        _seq, block, crc = (int(x) for x in line.split())
                        last[block] = crc
                        writes += 1
                lost = sum(1 for block, crc in last.items() if crcs[block] != crc)
                return {"vm": vm.name, "writes": writes, "lost": lost, "blocks_checked": len(last)}
        finally:
            if guest is not None:
                guest.pause.clear()
