"""Where the move writes: every destination's volume, the space it needs there (less what this
move's own earlier attempt already copied, plus the batch's reservations and the headroom), and
files that are already in the way."""

from __future__ import annotations

from collections import defaultdict

from hvmove import models
from hvmove.hyperv.errors import PermanentError
from hvmove.layout import MoveLayout, norm
from hvmove.models import Check, PrecheckReport, VMInfo
from hvmove.prechecks.common import (
    Add,
    GiB,
    Options,
    OwnAttempt,
    double_hop_remedy,
    key_of,
    unc_share,
)
from hvmove.prechecks.reads import HostReads, paths_of


def destinations(
    client: HostReads,
    vm: VMInfo,
    plan: MoveLayout,
    options: Options,
    reserved: dict[str, int],
    ours: OwnAttempt,
    report: PrecheckReport,
    cluster: str | None = None,
) -> None:
    add = report.checks.append
    paths = paths_of(vm, plan)
    wants = paths.wants
    try:
        # one call for the destinations and the source: the source's volume is known to exist
        *volumes, source = client.volumes(paths.volume_paths).volumes
    except PermanentError as exc:
        add(unreachable_destination(client.name, exc, [p for p, _ in wants]))
        return
    report.source_volume = key_of(client.name, source, cluster)
    existing = client.vhd_facts(paths.destination_files).disks
    # only an attempt that started (a job, or the mark before the start) left files of its
    # own; a file that blocked the first precheck is in the record's plan but never ours
    own = {norm(p) for p in ours.destinations} if ours.job_id else set()
    # an earlier attempt's partial files already take their space from "free": charging the
    # whole move again would block the rerun of a half-copied move by its own copy
    credit = {
        norm(d.path): d.vhd.file_size
        for d in existing
        if d.exists and d.vhd is not None and norm(d.path) in own
    }
    needed: dict[str, int] = defaultdict(int)
    copied: dict[str, int] = defaultdict(int)
    info: dict[str, models.VolumeInfo] = {}
    for (path, size), vol in zip(wants, volumes, strict=True):
        key = key_of(client.name, vol, cluster)
        done = min(size, credit.get(norm(path), 0))
        needed[key] += size - done
        copied[key] += done
        info[key] = vol
    report.needed_by_volume = dict(needed)
    report.destination_volume = next(iter(needed), "")
    growth = sum(
        plan.vhd_info[s].size - plan.vhd_info[s].file_size
        for s in plan.vhds
        if plan.vhd_info[s].type != "Fixed"
    )
    for key, need in needed.items():
        space(add, key, info[key], need, copied[key], reserved.get(key, 0), growth, options)
    theirs = [d.path for d in existing if d.exists and norm(d.path) not in own]
    if theirs:
        add(
            Check(
                name="destination files",
                status="fail",
                detail=f"already exist: {', '.join(theirs)}",
                remedy="remove them or choose another destination (Move-VMStorage does not "
                "overwrite)",
            )
        )


def unreachable_destination(host: str, exc: PermanentError, paths: list[str]) -> Check:
    # only the shares the host's message names: a typo elsewhere is not a delegation problem
    detail = exc.detail.lower()
    shares = sorted(
        {unc_share(p) for p in paths if unc_share(p) and unc_share(p).lower() in detail}
    )
    return Check(
        name="destination path",
        status="fail",
        detail=exc.detail,
        remedy=double_hop_remedy(host, shares)
        if shares
        else "give a path on a volume or share this host can reach",
    )


def space(
    add: Add,
    key: str,
    vol: models.VolumeInfo,
    need: int,
    copied: int,
    reserved: int,
    growth: int,
    options: Options,
) -> None:
    """The space check of one destination volume: what is still to copy, against what is free
    less the batch's reservations, keeping the headroom."""
    headroom = int(vol.capacity * options.headroom_percent / 100)
    after = vol.free - need - reserved
    numbers = {
        "key": key,
        "volume": vol.volume,
        "bytes_needed": need,
        "free": vol.free,
        "already_copied": copied,
        "reserved_by_batch": reserved,
        "free_after": after,
        "headroom": headroom,
        "capacity": vol.capacity,
    }
    text = (
        f"{vol.volume} needs {need / GiB:,.1f} GiB"
        + (f" more ({copied / GiB:,.1f} GiB already copied by this move)" if copied else "")
        + f"; {vol.free / GiB:,.1f} GiB free"
        + (f", {reserved / GiB:,.1f} GiB reserved by the batch" if reserved else "")
        + f"; {max(after, 0) / GiB:,.1f} GiB left after the move"
    )
    if after < headroom:
        add(
            Check(
                name="space",
                status="fail",
                detail=f"{text}, below the {options.headroom_percent:g}% headroom "
                f"({headroom / GiB:,.1f} GiB)",
                remedy="pick a volume with more free space, free space, or move fewer VMs "
                "there in this batch",
                numbers=numbers,
            )
        )
        return
    add(Check(name="space", status="pass", detail=text, numbers=numbers))
    if growth and after - growth < 0:
        add(
            Check(
                name="dynamic growth",
                status="warn",
                detail=f"dynamic disks could grow by {growth / GiB:,.1f} GiB, more than "
                f"what {vol.volume} keeps free",
                remedy="watch the volume; a full volume pauses VMs",
                numbers={"growth": growth},
            )
        )
