"""Windows paths as hvmove reasons about them: the naming rules a plan's paths must follow, and the
ONE key that names a volume across the estate (used by prechecks, the planner and the analysis).

Naming rules, from "Naming Files, Paths, and Namespaces"
(https://learn.microsoft.com/windows/win32/fileio/naming-a-file): the reserved characters
``< > : " / \\ | ? *`` and the characters 0-31 are not allowed in a name; CON, PRN, AUX, NUL,
COM1-COM9, LPT1-LPT9 (and COM/LPT with a superscript 1-3) are reserved device names, "also avoid
these names followed immediately by an extension"; "do not end a file or directory name with a
space or a period" (the system strips them, so the path named is not the path used); ``.`` and
``..`` are the current and parent directory; MAX_PATH is 260 characters including the
terminating NUL, and a component is at most 255 characters (lpMaximumComponentLength of NTFS,
ReFS and SMB shares).
"""

from __future__ import annotations

import re

# '/' is read as '\' by Windows (and by hvmove's own normaliser), so it separates, not forbidden
RESERVED_CHARACTERS = '<>:"|?*'
RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"]
)
MAX_PATH = 259  # 260 with the terminating NUL
MAX_COMPONENT = 255

_DRIVE = re.compile(r"^[A-Za-z]:\\")


def path_problem(path: str) -> str:
    """The first Windows naming rule ``path`` breaks, as one line; '' for a usable absolute path
    ('X:\\...' or '\\\\server\\share\\...')."""
    shown = _shown(path)
    if any(ord(c) < 32 for c in path):
        bad = next(c for c in path if ord(c) < 32)
        return f"{shown} contains the control character {_char_name(bad)} (not allowed in names)"
    p = path.replace("/", "\\")
    if p.startswith("\\\\"):
        parts = p[2:].split("\\")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            return f"{shown} is not an absolute Windows path (a share is '\\\\server\\share\\...')"
        names, where = parts[2:], "after the share"
        head = parts[:2]
    elif _DRIVE.match(p):
        names, where, head = p[3:].split("\\"), "after the drive", []
    else:
        return (
            f"{shown} is not an absolute Windows path (like 'E:\\VMs\\web01' or "
            "'\\\\server\\share\\web01')"
        )
    if len(path) > MAX_PATH:
        return f"{shown} is {len(path)} characters long; Windows paths hold at most {MAX_PATH}"
    for name in head:
        problem = _name_problem(name, shown)
        if problem:
            return problem
    if names and names[-1] == "":
        names = names[:-1]  # one trailing backslash names the same folder
    for name in names:
        if name == "":
            return f"{shown} has an empty folder name (two backslashes in a row {where})"
        problem = _name_problem(name, shown)
        if problem:
            return problem
    return ""


def _name_problem(name: str, shown: str) -> str:
    if name in (".", ".."):
        return f"{shown} contains a '{name}' segment; give the folder itself, without '.' or '..'"
    bad = [c for c in RESERVED_CHARACTERS if c in name]
    if bad:
        return f"{shown}: the name {name!r} contains {bad[0]!r}, a character Windows reserves"
    if len(name) > MAX_COMPONENT:
        return f"{shown}: a name is {len(name)} characters long; at most {MAX_COMPONENT}"
    if name[-1] in " .":
        what = "a space" if name[-1] == " " else "a period"
        return (
            f"{shown}: the name {name!r} ends with {what}, which Windows strips (the path "
            "used would not be the path given)"
        )
    base = name.split(".", 1)[0].rstrip(" ")
    if base.upper() in RESERVED_NAMES:
        return (
            f"{shown}: {name!r} is the reserved device name {base.upper()} (reserved with or "
            "without an extension)"
        )
    return ""


def _shown(path: str) -> str:
    """The path quoted as written, control characters made visible (one line, always)."""
    return "'" + "".join(_char_name(c) if ord(c) < 32 else c for c in path) + "'"


def _char_name(c: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}.get(c, f"\\x{ord(c):02x}")


# --- the one volume key --------------------------------------------------------------------------
UNKNOWN_CLUSTER = "?"


def volume_scope(kind: str, *, host: str | None = None, cluster: str | None = None) -> str:
    """Who shares a volume: '' for an SMB share (the same whichever host sees it), the cluster
    for a cluster shared volume (the same C:\\ClusterStorage\\Volume1\\ on every node, a different
    one in the next cluster), the host for a local volume."""
    if kind == "smb":
        return ""
    if kind == "csv":
        # Keying a CSV per node would let moves from two nodes each count its free space. With
        # the cluster unknown, every such CSV of that path shares one key: space is counted too
        # tightly rather than twice.
        return (cluster or UNKNOWN_CLUSTER).lower()
    if not host:
        raise ValueError("a local volume needs its host name to get a key")
    return host.lower()


def volume_root(volume: str) -> str:
    """A volume root compared the way Windows does: backslashes, no case, one trailing slash."""
    return volume.replace("/", "\\").rstrip("\\").lower() + "\\"


def key_root(key: str) -> str:
    """The volume root a volume key names ('hv01|e:\\' -> 'e:\\'); a bare root or a share's
    key is its own root. '|' is reserved in Windows names, so it only ever ends the scope."""
    return volume_root(key.rsplit("|", 1)[-1])


def volume_key(
    volume: str, *, kind: str, host: str | None = None, cluster: str | None = None
) -> str:
    """The key naming one volume across the whole estate, the same whichever host reports it:
    ``hv01|e:\\`` (local), ``clu1|c:\\clusterstorage\\volume1\\`` (CSV),
    ``\\\\fs01\\vms\\`` (share)."""
    root = volume_root(volume)
    if kind == "smb" and not root.startswith("\\\\"):
        raise ValueError(f"an SMB volume is a UNC path, not {volume!r}")
    scope = volume_scope(kind, host=host, cluster=cluster)
    return f"{scope}|{root}" if scope else root
