"""A plan as a night: prechecks and the inventory turned into the planner's inputs, the window
parsed, and throughput estimated from the bandwidth probe and past moves in the store."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import PureWindowsPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hvmove import planner, prechecks
from hvmove.config import Config, HostConfig
from hvmove.errors import ConfigError
from hvmove.hyperv.client import HostClient
from hvmove.hyperv.prefetch import HostSnapshot, SharedProbes
from hvmove.inventory import HostInventory
from hvmove.models import MoveRequest, PrecheckReport
from hvmove.plans import ResolvedMove
from hvmove.prechecks import batched, key_of
from hvmove.store import OPEN_STATES, Store

# without history or a probe, assume a plain host copy at this rate (bytes/s)
FALLBACK_RATE = 100e6


def parse_window(
    text: str, now: datetime, tz: str = "UTC", margin: timedelta = timedelta(0)
) -> planner.Window:
    """'22:00-05:00' in a timezone: the occurrence we are in, or else the next one."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown timezone {tz!r} (use an IANA name like Europe/Berlin)"
        ) from None
    try:
        a, b = (time.fromisoformat(part.strip().zfill(5)) for part in text.split("-"))
    except ValueError:
        raise ConfigError(f"window {text!r}: expected HH:MM-HH:MM, e.g. 22:00-05:00") from None
    today = now.astimezone(zone).date()
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        # the admin's wall-clock times, compared and subtracted in UTC: datetimes of one zone
        # are compared as wall-clock times, an hour off on a daylight-saving night
        start = datetime.combine(day, a, zone)
        end = datetime.combine(day + timedelta(days=1 if b <= a else 0), b, zone)
        if now.astimezone(UTC) < end.astimezone(UTC):
            if end.astimezone(UTC) - margin <= max(start, now).astimezone(UTC):
                continue  # what is left of this one cannot hold any move
            return planner.Window(start=start, end=end, margin=margin)
    raise ConfigError(f"window {text!r}: no usable occurrence")  # pragma: no cover


def batch_id_for(scheduled_start: datetime) -> str:
    """A night's batch id from its run's scheduled start (UTC), so that a retried or restarted
    night is the same batch, and a cancel hook finds its moves."""
    from datetime import UTC

    return scheduled_start.astimezone(UTC).strftime("night-%Y%m%dT%H%M")


@dataclass
class NightInputs:
    moves: list[planner.PlannedMove] = field(default_factory=list)
    volumes: list[planner.VolumeState] = field(default_factory=list)
    limits: planner.Limits | None = None
    blocked: dict[str, str] = field(default_factory=dict)  # move id -> reason
    already_done: list[str] = field(default_factory=list)
    finish_only: list[str] = field(default_factory=list)
    by_id: dict[str, ResolvedMove] = field(default_factory=dict)
    # shared-bandwidth model (hvmove.learning): resource capacities, each move's probe rate
    bandwidth: dict[str, float] = field(default_factory=dict)
    probes: dict[str, float | None] = field(default_factory=dict)


def move_id(move: ResolvedMove) -> str:
    return f"{move.request.host.lower()}/{move.vm.id.lower()}"


def host_limit(host: HostConfig, maximum_storage_migrations: int) -> int:
    return planner.Limits.host_limit(maximum_storage_migrations, host.max_storage_migrations)


def past_rates(store: Store) -> dict[tuple[str, str], list[float]]:
    """Observed copy rates (bytes/s) of completed moves, per (source volume, destination volume)."""
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in store.moves():
        if r.status == "completed" and r.copy_seconds and r.bytes_total:
            rates[(r.source_volume, r.destination_volume)].append(r.bytes_total / r.copy_seconds)
    return rates


def night_inputs(
    cfg: Config,
    moves: list[ResolvedMove],
    reports: list[PrecheckReport],
    inventories: list[HostInventory],
    store: Store | None = None,
) -> NightInputs:
    out = NightInputs()
    history = past_rates(store) if store is not None else {}
    # switched but not yet verified or cleaned up by a run that died: finish those steps
    unfinished = set(open_attempts(store, moves))
    probe_rates: dict[str, float] = {}
    hosts: dict[str, int] = {}
    for inv in inventories:
        if inv.facts is not None:
            hosts[inv.name] = host_limit(cfg.host(inv.name), inv.facts.maximum_storage_migrations)
    for move, report in zip(moves, reports, strict=True):
        mid = move_id(move)
        out.by_id[mid] = move
        if report.already_done:
            # switched by a run that died before verifying and cleaning up: only those steps
            # remain, and they take no copy slot
            (out.finish_only if mid in unfinished else out.already_done).append(mid)
            continue
        # The prechecks asked without the batch's reservations (reserve=False): a failed space
        # check means the move does not fit its destination even alone, with no other move of
        # the batch reserving there, and waiting a night would not change that: blocked, like
        # every other failure. Whether it fits beside tonight's other moves is the planner's
        # to judge (deferred for space when not).
        # a probe measured its volume whatever becomes of the move: a blocked move's probe
        # still tells the planner the bandwidth of a volume other moves copy from
        if report.mbps:
            probe_rates[report.destination_volume] = report.mbps * 1e6
        if report.source_mbps:
            probe_rates.setdefault(report.source_volume, report.source_mbps * 1e6)
        if report.failures():
            out.blocked[mid] = report.reason()
            continue
        samples = list(history.get((report.source_volume, report.destination_volume), []))
        if report.mbps:
            samples.append(report.mbps * 1e6)
        rate = planner.Throughput.from_samples(samples or [FALLBACK_RATE])
        reserve = sum(report.needed_by_volume.values())
        out.probes[mid] = report.mbps * 1e6 if report.mbps else None
        out.moves.append(
            planner.PlannedMove(
                id=mid,
                host=move.request.host,
                vm=move.vm.name,
                source_volumes=[report.source_volume],
                destination_volume=report.destination_volume,
                bytes=max(report.bytes_to_copy, 1),
                reserve_bytes=reserve,
                throughput=rate,
                odx=bool(report.odx),
            )
        )
    out.volumes = _night_volumes(cfg, inventories, reports, probe_rates)
    if store is not None:
        relearn(out, store, probe_rates)
    d = cfg.defaults
    out.limits = planner.Limits(
        hosts=hosts,
        source_volume=d.moves_per_source_volume,
        destination_volume=d.moves_per_destination_volume,
    )
    return out


def _night_volumes(
    cfg: Config,
    inventories: list[HostInventory],
    reports: list[PrecheckReport],
    probe_rates: dict[str, float],
) -> list[planner.VolumeState]:
    """Every volume once, by its estate-wide key: those the hosts reported, then destinations no
    VM uses yet (a new share) known from prechecks."""
    seen: set[str] = set()
    headroom = cfg.defaults.headroom_percent
    out: list[planner.VolumeState] = []
    for inv in inventories:
        cluster = inv.facts.cluster_name if inv.facts else None
        for vol in inv.volumes:
            key = key_of(inv.name, vol, cluster)
            if key in seen or vol.capacity <= 0:
                continue
            seen.add(key)
            where = {"smb": "", "csv": f" on {cluster or 'its cluster'}"}.get(
                vol.kind, f" on {inv.name}"
            )
            out.append(
                planner.VolumeState(
                    key=key,
                    capacity=vol.capacity,
                    free=min(vol.free, vol.capacity),
                    headroom_percent=headroom,
                    write_bandwidth=probe_rates.get(key),
                    label=f"{vol.volume}{where}",
                )
            )
    for report in reports:
        for c in report.checks:
            n = c.numbers
            if c.name == "space" and n.get("key") not in seen and n.get("capacity"):
                seen.add(str(n["key"]))
                out.append(
                    planner.VolumeState(
                        key=str(n["key"]),
                        capacity=int(n["capacity"]),
                        free=min(int(n["free"]), int(n["capacity"])),
                        headroom_percent=headroom,
                        write_bandwidth=probe_rates.get(str(n["key"])),
                        label=str(n["volume"]),
                    )
                )
    return out


def relearn(out: NightInputs, store: Store, probe_rates: dict[str, float] | None = None) -> None:
    """Re-estimate the moves' rates alone and the shared bandwidth from the store's history
    (and what tonight's finished copies added to it): see hvmove.learning."""
    from hvmove import learning

    if probe_rates is None:
        probe_rates = {
            v.key: v.write_bandwidth for v in out.volumes if v.write_bandwidth is not None
        }
    model = learning.night_model(learning.observations(store), out.moves, probe_rates)
    out.moves = [model.planned(m, out.probes.get(m.id), FALLBACK_RATE) for m in out.moves]
    out.bandwidth = model.bandwidth


def any_window(text: str | None, now: datetime, tz: str, margin: timedelta) -> planner.Window:
    """A window from 'HH:MM-HH:MM'; 'now' starts now and lasts a day, 'now+90' 90 minutes."""
    if text and text.startswith("now+"):
        try:
            minutes = float(text[4:])
        except ValueError:
            raise ConfigError(f"window {text!r}: expected now+MINUTES, e.g. now+90") from None
        end = now.astimezone(UTC) + timedelta(minutes=minutes)
    elif not text or text == "now":
        end = now.astimezone(UTC) + timedelta(days=1)
    else:
        return parse_window(text, now, tz, margin)
    if end - margin <= now:
        raise ConfigError(
            f"window {text!r} ends before its safety margin of {margin.total_seconds() / 60:g} "
            "minutes; give a longer window or a smaller margin (--margin / window_margin_minutes)"
        )
    return planner.Window(start=now, end=end, margin=margin)


def load_and_resolve(
    cfg: Config, plan_file: str | object, store: Store | None = None
) -> tuple[list[ResolvedMove], list[HostInventory]]:
    """The plan checked against the config and the hosts' inventories: any problem is one
    ConfigError line and nothing starts."""
    from pathlib import Path

    from hvmove.errors import HvmoveError
    from hvmove.inventory import collect
    from hvmove.layout import norm
    from hvmove.plans import load_plan, resolve

    plan = load_plan(Path(str(plan_file)))
    known_hosts = {h.name.lower(): h.name for h in cfg.hosts}
    names = sorted(
        {known_hosts[m.host.lower()] for m in plan.moves if m.host.lower() in known_hosts}
    )
    inventories = collect(cfg, names) if names else []
    for inv in inventories:
        if inv.error:
            raise HvmoveError(inv.error)
    known = {(r.vm_id.lower(), norm(r.destination)) for r in store.moves()} if store else set()
    moves = resolve(plan, cfg, {i.name: i.vms for i in inventories}, plan_file, known)
    return moves, inventories


def open_attempts(
    store: Store | None, moves: list[ResolvedMove]
) -> dict[str, prechecks.OwnAttempt]:
    """Moves an earlier run left unfinished (crash, kill): their running job and destination
    files are this move's own, not a reason to block it."""
    if store is None:
        return {}
    wanted = {(m.request.host.lower(), m.vm.id.lower()): move_id(m) for m in moves}
    out: dict[str, prechecks.OwnAttempt] = {}
    for r in store.moves():
        mid = wanted.get((r.host.lower(), r.vm_id.lower()))
        if mid and mid not in out and r.status in OPEN_STATES and (r.job_id or r.last_step):
            out[mid] = prechecks.OwnAttempt(
                job_id=r.job_id, destinations=list((r.before or {}).get("destinations", []))
            )
    return out


def precheck_all(
    cfg: Config,
    moves: list[ResolvedMove],
    *,
    reserve: bool = True,
    store: Store | None = None,
) -> list[PrecheckReport]:
    """Every move's prechecks, in plan order. With ``reserve`` the space each passing move needs
    is counted against the moves after it (a batch run one after another); the nightly planner
    does its own reservation and asks without. With ``store``, what an unfinished earlier
    attempt left (its job, its files) counts as the move's own. Each host is read once for all
    its moves (hosts in parallel, see hvmove.prechecks.batched); the checks of each move are then
    the per-VM prechecks, run in plan order."""
    from hvmove.hyperv.client import open_client

    reports: list[PrecheckReport] = []
    reserved: dict[str, int] = {}
    clients: dict[str, HostClient] = {}
    attempts = open_attempts(store, moves)
    try:
        for move in moves:
            if move.request.host not in clients:
                clients[move.request.host] = open_client(cfg, move.request.host)
        hosts = host_snapshots(cfg, moves, clients)
        for move in moves:
            req = move.request
            report = prechecks.run(
                hosts[req.host],  # the host as the batch read it
                req,
                options_for(cfg, req),
                reserved if reserve else None,
                attempts.get(move_id(move)),
                vm_id=move.vm.id,
            ).report
            if report.ok and reserve:
                for key, need in report.needed_by_volume.items():
                    reserved[key] = reserved.get(key, 0) + need
            reports.append(report)
        if not reserve:
            probe_sources(cfg, moves, reports, clients)
    finally:
        for c in clients.values():
            c.close()
    return reports


def probe_sources(
    cfg: Config,
    moves: list[ResolvedMove],
    reports: list[PrecheckReport],
    clients: dict[str, HostClient],
) -> None:
    """For the night's planner: the bandwidth of every source volume that no destination probe
    measured, probed once in the folder of a VM's first disk there. A copy uses its source as
    much as its destination (hvmove.throughput), and copies sharing a source split it: planned
    without it, two copies from one slow volume would each be planned at the destination's
    pace. A failed probe leaves the volume unknown (the planner then bounds it by history)."""
    from hvmove.errors import HvmoveError

    measured = {r.destination_volume for r in reports if r.mbps}
    found: dict[str, float | None] = {}
    for move, report in zip(moves, reports, strict=True):
        key = report.source_volume
        if not key or key in measured or report.already_done:
            continue
        if key not in found:
            files = move.vm.vhd_files()
            where = files[0].path if files else move.vm.configuration_location
            folder = str(PureWindowsPath(where).parent)
            try:
                probe = clients[move.request.host].bandwidth(
                    folder, options_for(cfg, move.request).probe_mib
                )
                found[key] = min(probe.write_mbps, probe.read_mbps) or None
            except HvmoveError:
                found[key] = None
        report.source_mbps = found[key]


def host_snapshots(
    cfg: Config, moves: list[ResolvedMove], clients: dict[str, HostClient]
) -> dict[str, HostSnapshot]:
    """Each host read once for the prechecks of all its moves, hosts in parallel."""
    items: dict[str, list[batched.Item]] = defaultdict(list)
    for move in moves:
        req = move.request
        items[req.host].append(batched.Item(req, options_for(cfg, req), move.vm.id))
    shared = SharedProbes()
    with ThreadPoolExecutor(max_workers=min(16, len(items)) or 1) as pool:
        found = pool.map(lambda h: batched.snapshot(clients[h], items[h], shared), list(items))
        return dict(zip(list(items), found, strict=True))


def options_for(cfg: Config, request: MoveRequest) -> prechecks.Options:
    """The request's own precheck options, else the config's defaults."""
    d = cfg.defaults
    headroom = request.headroom_percent
    return prechecks.Options(
        headroom_percent=d.headroom_percent if headroom is None else headroom,
        probe_mib=request.probe_mib or d.probe_mib,
        allow_checkpoints=d.allow_checkpoints,
        keep_source=d.keep_source_until_verified
        if request.keep_source_until_verified is None
        else request.keep_source_until_verified,
    )
