"""What the host decides: which way the move starts (and so what happens to the source), its
storage-move slots, and how fast the copy may go (ODX, a bandwidth probe)."""

from __future__ import annotations

from hvmove import models
from hvmove.hyperv.errors import PermanentError, TransientError
from hvmove.layout import MoveLayout
from hvmove.models import Check, PrecheckReport, VMInfo
from hvmove.prechecks.common import Add, GiB, Options, double_hop_remedy, duration, unc_share
from hvmove.prechecks.reads import HostReads, paths_of


def move_path(facts: models.HostFacts, options: Options, report: PrecheckReport) -> None:
    """Which way the move starts, and so what happens to the source. Move-VMStorage deletes the
    source copy of every moved disk at the switch (-RetainVhdCopiesOnSource keeps only parents);
    only the WMI migration with AvoidRemovingVHDs keeps them until hvmove has verified the
    destination, and a host without that property cannot keep them at all."""
    if not options.keep_source:
        report.move_path = "move-vmstorage"
        report.checks.append(
            Check(
                name="source copy",
                status="pass",
                detail="Move-VMStorage: Hyper-V deletes the source copy of each moved disk when "
                "the VM switches, before verification (keep_source_until_verified: false)",
            )
        )
    elif facts.keep_source_supported:
        report.move_path = "wmi"
        report.checks.append(
            Check(
                name="source copy",
                status="pass",
                detail="WMI storage migration with AvoidRemovingVHDs: every source copy is kept "
                "until the destination is verified",
            )
        )
    else:
        report.checks.append(
            Check(
                name="source copy",
                status="fail",
                detail="cannot keep the source until verified on this host: "
                f"{facts.keep_source_detail or 'AvoidRemovingVHDs is not available'}",
                remedy="update the host (AvoidRemovingVHDs came with Windows Server 2016 / "
                "Windows 10 1703), or set keep_source_until_verified: false to move with "
                "Move-VMStorage, which deletes the moved disks' source at the switch",
            )
        )


def host_limit(facts: models.HostFacts, add: Add) -> None:
    running, limit = facts.running_storage_moves, facts.maximum_storage_migrations
    numbers = {"running": running, "maximum_storage_migrations": limit}
    if limit < 1:
        add(
            Check(
                name="host limit",
                status="fail",
                detail="MaximumStorageMigrations is 0: the host runs no storage moves",
                remedy="Set-VMHost -MaximumStorageMigrations 2",
                numbers=numbers,
            )
        )
    elif running >= limit:
        add(
            Check(
                name="host limit",
                status="warn",
                detail=f"{running} of {limit} storage moves running; this move waits for a slot",
                numbers=numbers,
            )
        )
    else:
        add(
            Check(
                name="host limit",
                status="pass",
                detail=f"{running} of {limit} storage moves running",
                numbers=numbers,
            )
        )


def speed(
    client: HostReads, vm: VMInfo, plan: MoveLayout, options: Options, report: PrecheckReport
) -> None:
    add = report.checks.append
    paths = paths_of(vm, plan)
    try:
        odx = client.odx(paths.source, paths.first_destination)
        report.odx = odx.odx
        add(
            Check(
                name="odx",
                status="pass",
                detail=("copy offloaded to the array (ODX): " if odx.odx else "no ODX: ")
                + odx.reason,
                numbers={"odx": odx.odx},
            )
        )
    except (PermanentError, TransientError) as exc:
        add(Check(name="odx", status="warn", detail=f"could not tell: {exc.detail}"))
    if not options.probe:
        return
    folder = paths.probe_folder
    if options.measured_mbps:
        _eta(report, add, options.measured_mbps, options.probe_mib, "by the batch's prechecks")
        return
    try:
        probe = client.bandwidth(folder, options.probe_mib)
    except (PermanentError, TransientError) as exc:
        share = unc_share(folder)
        add(
            Check(
                name="bandwidth",
                status="warn",
                detail=f"probe failed: {exc.detail}",
                remedy="the ETA is unknown; "
                + (
                    double_hop_remedy(client.name, [share])
                    if share and "denied" in exc.detail.lower()
                    else "check the destination is writable"
                ),
            )
        )
        return
    _eta(report, add, min(probe.write_mbps, probe.read_mbps), options.probe_mib, "now")


def _eta(report: PrecheckReport, add: Add, mbps: float, probe_mib: int, when: str) -> None:
    report.mbps = mbps
    report.eta_seconds = report.bytes_to_copy / (mbps * 1e6) if mbps > 0 else None
    eta = duration(report.eta_seconds)
    add(
        Check(
            name="bandwidth",
            status="pass",
            detail=f"{mbps:,.0f} MB/s measured at the destination ({when}); ETA {eta} for "
            f"{report.bytes_to_copy / GiB:,.1f} GiB"
            + (" (ODX will likely be faster)" if report.odx else ""),
            numbers={"mbps": mbps, "eta_seconds": report.eta_seconds, "probe_mib": probe_mib},
        )
    )
