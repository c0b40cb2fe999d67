"""Where each file of a VM ends up for a move request, as Move-VMStorage lays it out.

Single destination (mode ``all``): configuration, checkpoints and smart paging go to the
destination root, every VHD (checkpoint disks and parents included) to
``<destination>\\Virtual Hard Disks\\<file name>``. Modes ``components`` and ``vhds`` move only
what the request names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PureWindowsPath

from hvmove.models import MoveRequest, VhdInfo, VMInfo


def norm(path: str) -> str:
    return path.replace("/", "\\").rstrip("\\").lower()


def is_absolute(path: str) -> bool:
    """A Windows absolute path: 'X:\\...' or '\\\\server\\share\\...'."""
    p = PureWindowsPath(path)
    if path.startswith("\\\\"):
        parts = [x for x in path[2:].split("\\") if x]
        return len(parts) >= 2
    return bool(p.drive) and p.root == "\\" and len(p.drive) == 2 and p.drive[0].isalpha()


@dataclass
class MoveLayout:
    """The files and locations a request moves: source -> destination (Windows paths)."""

    vhds: dict[str, str] = field(default_factory=dict)  # source path -> destination path
    vhd_info: dict[str, VhdInfo] = field(default_factory=dict)  # source path -> facts
    configuration: str | None = None
    snapshot: str | None = None
    smart_paging: str | None = None
    config_bytes: int = 0

    @property
    def bytes_to_copy(self) -> int:
        return sum(self.vhd_info[s].file_size for s in self.vhds if s in self.vhd_info) + (
            self.config_bytes if self.configuration else 0
        )

    def destinations(self) -> list[str]:
        """Every destination folder or file the move writes to, with the landing of each parent
        it may carry along (so that a rerun knows a partial parent there as its own)."""
        out = list(self.vhds.values()) + list(carried_parents(self).values())
        out += [p for p in (self.configuration, self.snapshot, self.smart_paging) if p]
        return out

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.vhds.items())


def layout(request: MoveRequest, vm: VMInfo) -> MoveLayout:
    files = {v.path: v for v in vm.vhd_files()}
    out = MoveLayout(vhd_info=files, config_bytes=vm.config_bytes)
    shared = {norm(c.path) for d in vm.drives if d.shared for c in d.chain}
    if request.mode == "all":
        dest = request.destination or ""
        for path in files:
            if norm(path) in shared:
                continue  # Hyper-V skips shared disks with a warning; prechecks block them first
            out.vhds[path] = str(
                PureWindowsPath(dest, "Virtual Hard Disks", PureWindowsPath(path).name)
            )
        out.configuration = out.snapshot = out.smart_paging = dest
    else:
        by_norm = {norm(p): p for p in files}
        for m in request.vhds:
            if norm(m.source) in by_norm:
                out.vhds[by_norm[norm(m.source)]] = m.destination
            elif norm(m.destination) in by_norm:
                continue  # switched already: the VM uses the destination copy
            else:
                out.vhds[m.source] = m.destination  # not a disk of the VM: prechecks say so
        if request.mode == "components":
            out.configuration = request.virtual_machine_path
            out.snapshot = request.snapshot_file_path
            out.smart_paging = request.smart_paging_file_path
    # a rerun after the switch asks for what is already true: leave those parts out
    out.vhds = {s: d for s, d in out.vhds.items() if norm(s) != norm(d)}
    if out.configuration and norm(out.configuration) == norm(vm.configuration_location):
        out.configuration = None
    if out.snapshot and norm(out.snapshot) == norm(vm.snapshot_file_location):
        out.snapshot = None
    if out.smart_paging and norm(out.smart_paging) == norm(vm.smart_paging_file_path):
        out.smart_paging = None
    return out


def carried_parents(plan: MoveLayout) -> dict[str, str]:
    """Parents of moved differencing disks that the request does not name, each with where it
    would land: the folder of the child's destination.

    Whether Hyper-V moves such a parent at all is not documented. -Vhds lists "each individual
    virtual hard disk to be moved", which reads as: the parent stays and the child's copy
    points at it; but -RetainVhdCopiesOnSource ("keep any parent virtual hard disks on the
    source") and -RemoveSourceUnmanagedVhds ("deletes the parent virtual hard disk on the source
    after this cmdlet moves a differencing virtual hard disk") speak of parents a move takes
    along (learn.microsoft.com/powershell/module/hyper-v/move-vmstorage; the WMI side names them
    only as Msvm_MoveUnmanagedVhd pairs, msvm-virtualsystemmigrationsettingdata). hvmove takes
    the safe assumption for both answers: the parent MAY land in the child's folder, so its name,
    an existing file there and its bytes count in the prechecks and the landing is recorded as
    the move's own destination; it MAY stay, so cleanup never deletes it (it is no source the
    request names). The prechecks say so ("unnamed parents"); the lab answers either way
    (premise unnamed_parents_move_with_child); a Windows host (the canary) settles it.
    Chains are walked as Get-VMInventory walks them (ParentPath to the root), from the facts
    in plan.vhd_info.
    """
    info = {norm(p): v for p, v in plan.vhd_info.items()}
    named = {norm(s) for s in plan.vhds}
    out: dict[str, str] = {}
    for src, dst in plan.vhds.items():
        folder = PureWindowsPath(dst).parent
        parent = info[norm(src)].parent_path if norm(src) in info else None
        seen: set[str] = set()
        while parent and norm(parent) not in named and norm(parent) not in seen:
            seen.add(norm(parent))
            landing = str(PureWindowsPath(folder, PureWindowsPath(parent).name))
            if norm(landing) != norm(parent):
                out.setdefault(parent, landing)
            parent = info[norm(parent)].parent_path if norm(parent) in info else None
    return out


def unswitched(request: MoveRequest, vm: VMInfo) -> list[str]:
    """What the move still has to switch: each file the request moves that the VM (or one of its
    checkpoints) attaches and that is not at its destination yet, and each location not switched.

    The switch is judged by what the VM attaches, not by the parents of its disks: whether Hyper-V
    carries a parent that no drive or checkpoint attaches (a golden image) is not documented
    (carried_parents), so a parent left in place is no sign of a move that did not happen. In
    mode all the VM switches as a whole; its parents moved or not, parent_locations says where
    they are. In modes components and vhds the request names only attached files already."""
    remaining = layout(request, vm)
    files = list(remaining.vhds)
    if request.mode == "all":
        attached = {norm(d.path) for d in vm.drives if d.path and not d.pass_through}
        attached |= {norm(v.path) for v in vm.checkpoint_files}
        files = [f for f in files if norm(f) in attached]
    return files + [
        p for p in (remaining.configuration, remaining.snapshot, remaining.smart_paging) if p
    ]


def parent_locations(before: dict | None, vm: VMInfo) -> list[dict]:
    """Where each parent of the VM's disks before the move is now: the path at the same depth of
    the same drive's chain, which the inventory walks along each child's ParentPath as the host
    reports it, when that file is the same disk (its disk identifier, which a copy keeps). before
    is the recorded VMInfo (JSON) from before the move; "now" is None when that drive or depth
    is gone or holds another disk (a chain that skips a link): verification then fails on it."""
    if not before:
        return []
    old = VMInfo.model_validate(before)
    now = {(d.controller_type, d.controller_number, d.controller_location): d for d in vm.drives}
    out: list[dict] = []
    seen: set[str] = set()
    for drive in old.drives:
        key = (drive.controller_type, drive.controller_number, drive.controller_location)
        chain = now[key].chain if key in now else []
        for depth, parent in enumerate(drive.chain[1:], start=1):
            if norm(parent.path) in seen:
                continue
            seen.add(norm(parent.path))
            found = chain[depth] if depth < len(chain) else None
            same = found is not None and found.disk_identifier == parent.disk_identifier
            where = found.path if found is not None and same else None
            moved = where is not None and norm(where) != norm(parent.path)
            out.append({"source": parent.path, "now": where, "moved": moved})
    return out


def source_folders(vm: VMInfo, moved: list[str]) -> list[str]:
    """Folders a move may leave empty on the source: each moved file's folder and the VM's
    old locations (Hyper-V removes files, never folders)."""
    folders = {str(PureWindowsPath(p).parent) for p in moved}
    folders |= {vm.configuration_location, vm.snapshot_file_location, vm.smart_paging_file_path}
    for loc in (vm.configuration_location, vm.snapshot_file_location):
        folders.add(str(PureWindowsPath(loc, "Virtual Machines")))
        folders.add(str(PureWindowsPath(loc, "Snapshots")))
    return sorted(folders, key=lambda f: norm(f).count("\\"), reverse=True)
