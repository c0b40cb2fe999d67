"""Before cleanup deletes: which source files and folders some VM still uses, on any host.

A Hyper-V host only knows its own VMs (Get-VM). A disk on an SMB share or a cluster shared volume
can be the parent of another host's VM (a golden image under differencing disks), so "no VM of
this host references it" is not enough there. Cleanup therefore asks this host and every host
that can see the volume (Find-PathReferences, read-only) and keeps whatever any of them uses:

- an SMB path (``\\\\server\\share\\...``): every host in hvmove.yaml;
- a cluster shared volume (``C:\\ClusterStorage\\...``): every node of the cluster, each of which
  must be in hvmove.yaml; a node hvmove cannot ask, or a cluster whose nodes the host cannot
  list, means nothing there is deleted (a permanent refusal saying why), never a guess;
- anything else is local to the host.

A host that does not answer makes the cleanup fail as a transient error (retried, and resumable
by running the move again): the files stay until every host has said it does not use them.

Not covered: a VM created on the same files between the question and the deletion (a second
question right before deleting would narrow this, not close it), file servers reached under
different share names (DFS namespaces), and hosts outside hvmove.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Literal

from hvmove.config import Config, HostConfig
from hvmove.errors import HvmoveError
from hvmove.hyperv.client import HostClient, open_client
from hvmove.hyperv.errors import HostError, TransientError
from hvmove.models import HostFacts, PathReferences, Refusal

Ask = Callable[[str, list[str], list[str]], PathReferences]


class UnknownClusterNode(HvmoveError):
    """A node of the cluster is not in hvmove.yaml: its VMs cannot be asked about a CSV path."""


class PeerUnreachable(TransientError):
    """A host that can see the shared volume did not answer; nothing was deleted there."""


def kind(path: str) -> Literal["smb", "csv", "local"]:
    p = PureWindowsPath(path)
    if p.drive.startswith("\\\\"):
        return "smb"
    parts = [x.lower() for x in p.parts]
    if len(parts) > 1 and parts[1] == "clusterstorage":
        return "csv"
    return "local"


def _short(name: str) -> str:
    return name.split(".")[0].strip().lower()


def node_host(node: str, hosts: list[HostConfig]) -> HostConfig | None:
    """The configured host that is this cluster node, by its name or the first label of its
    address."""
    for h in hosts:
        if _short(node) in {_short(h.name), _short(h.address)}:
            return h
    return None


@dataclass
class InUse:
    files: list[Refusal] = field(default_factory=list)
    folders: list[Refusal] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def file_paths(self) -> set[str]:
        return {f.path.lower() for f in self.files}

    def folder_paths(self) -> set[str]:
        return {f.path.lower() for f in self.folders}


def peers_to_ask(
    own: HostConfig,
    facts: HostFacts | Callable[[], HostFacts],
    hosts: list[HostConfig],
    paths: list[str],
) -> dict[str, list[str]]:
    """Configured host name -> the paths it must be asked about (this host is not included).
    ``facts`` may be a callable: the host's facts are read only for a CSV path."""
    kinds = {p: kind(p) for p in paths}
    others = [h for h in hosts if h.name != own.name]
    out: dict[str, list[str]] = {}
    smb = [p for p, k in kinds.items() if k == "smb"]
    if smb:
        for h in others:
            out.setdefault(h.name, []).extend(smb)
    csv = [p for p, k in kinds.items() if k == "csv"]
    if not csv:
        return out
    info = facts() if callable(facts) else facts
    if not (info.cluster_name and info.cluster_nodes):
        # fail closed: a CSV path on a host whose cluster (or its nodes) could not be read
        raise UnknownClusterNode(
            f"{csv[0]} looks like a cluster shared volume, but {own.name} could not say which "
            f"cluster nodes share it (cluster: {info.cluster_name or 'unknown'}); nothing there "
            "was deleted. Check the host's cluster service, then run the move again to finish "
            "the cleanup"
        )
    own_names = {_short(own.name), _short(own.address), _short(info.name)}
    missing = []
    for node in info.cluster_nodes:
        if _short(node) in own_names:
            continue
        h = node_host(node, others)
        if h is None:
            missing.append(node)
        else:
            out.setdefault(h.name, []).extend(p for p in csv if p not in out.get(h.name, []))
    if missing:
        raise UnknownClusterNode(
            f"{csv[0]} is on a cluster shared volume of {info.cluster_name}, and its "
            f"node(s) {', '.join(missing)} are not in hvmove.yaml, so hvmove cannot ask "
            "whether their VMs use these files; nothing there was deleted. Add every node "
            "of the cluster to hvmove.yaml and run the move again to finish the cleanup"
        )
    return out


def in_use(
    own: HostClient,
    facts: HostFacts | Callable[[], HostFacts],
    hosts: list[HostConfig],
    files: list[str],
    folders: list[str],
    ask: Ask,
) -> InUse:
    """What this host and every host sharing the volumes use of ``files`` and ``folders``."""
    result = InUse()
    mine = own.find_references(files, folders)
    result.asked.append(own.name)
    result.files += mine.files
    result.folders += mine.folders
    for name, paths in peers_to_ask(own.host, facts, hosts, files + folders).items():
        wanted = {p.lower() for p in paths}
        peer_files = [f for f in files if f.lower() in wanted]
        peer_folders = [f for f in folders if f.lower() in wanted]
        try:
            theirs = ask(name, peer_files, peer_folders)
        except TransientError as exc:
            raise PeerUnreachable(
                name,
                "Find-PathReferences",
                f"could not ask whether its VMs use the shared source files ({exc.detail}); "
                "they are kept until it answers",
            ) from exc
        except HostError as exc:
            raise UnknownClusterNode(
                f"{name} refused to say whether its VMs use the shared source files "
                f"({exc.detail}); they are kept. Fix access to {name} and run the move again"
            ) from exc
        result.asked.append(name)
        result.files += [
            Refusal(path=r.path, reason=f"{r.reason} (on {name})") for r in theirs.files
        ]
        result.folders += [
            Refusal(path=r.path, reason=f"{r.reason} (on {name})") for r in theirs.folders
        ]
    result.files, result.folders = _merged(result.files), _merged(result.folders)
    return result


def _merged(refusals: list[Refusal]) -> list[Refusal]:
    """One entry per path, with every host's reason."""
    by_path: dict[str, Refusal] = {}
    for r in refusals:
        seen = by_path.get(r.path.lower())
        if seen is None:
            by_path[r.path.lower()] = r.model_copy()
        elif r.reason not in seen.reason:
            seen.reason = f"{seen.reason}; {r.reason}"
    return list(by_path.values())


@contextmanager
def asker(config: Config) -> Iterator[Ask]:
    """Ask configured hosts by name, each client opened once and closed at the end."""
    with ExitStack() as stack:
        clients: dict[str, HostClient] = {}

        def ask(name: str, files: list[str], folders: list[str]) -> PathReferences:
            if name not in clients:
                clients[name] = stack.enter_context(open_client(config, name))
            return clients[name].find_references(files, folders)

        yield ask
