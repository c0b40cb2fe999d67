"""What every precheck shares: the options, this move's own earlier attempt, the volume key, and
the wording of sizes, durations and the double-hop remedy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PureWindowsPath

from hvmove import models
from hvmove.models import Check
from hvmove.paths import volume_key

GiB = 1024**3

# each check adds its findings to the report through this (report.checks.append)
Add = Callable[[Check], None]


@dataclass
class Options:
    headroom_percent: float = 10.0
    probe_mib: int = 64
    probe: bool = True
    # the destination's bandwidth as a batch's prechecks measured it (MB/s): used instead of a
    # probe of its own, so moves a night starts together do not measure each other
    measured_mbps: float | None = None
    allow_checkpoints: bool = True
    keep_source: bool = True  # keep_source_until_verified: the WMI path with AvoidRemovingVHDs


# The job id a record holds from just before Start-StorageMove until the host names the job: a
# process that dies in between leaves a move it started but never learned the id of.
JOB_STARTING = "(starting)"


@dataclass
class OwnAttempt:
    """What an earlier attempt of this same move left: its job and destination files are ours."""

    job_id: str | None = None
    destinations: list[str] = field(default_factory=list)


def key_of(host: str, info: models.VolumeInfo, cluster: str | None) -> str:
    """The estate-wide key of a volume this host reported (see hvmove.paths.volume_key)."""
    return volume_key(info.volume, kind=info.kind, host=host, cluster=cluster)


def unc_share(path: str) -> str:
    """'\\\\fs01\\vmstore' for a UNC path, '' for any other."""
    drive = PureWindowsPath(path).drive
    return drive if drive.startswith("\\\\") else ""


def double_hop_remedy(host: str, shares: list[str]) -> str:
    servers = sorted({s.lstrip("\\").split("\\")[0] for s in shares})
    return (
        f"if {', '.join(shares)} is the right share: {host} reaches it for a remote caller only "
        "with Kerberos delegation (the double hop). Configure constrained delegation of the "
        f"host's computer account to {', '.join('cifs/' + s for s in servers)} with 'use any "
        "authentication protocol', or run "
        + "; ".join(f"Enable-SmbDelegation -SmbServer {s} -SmbClient {host}" for s in servers)
        + "; give the host's computer account Full Control on the share and folder; use auth "
        "kerberos or negotiate (NTLM cannot delegate). See the README, 'The double hop'"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
