"""The checks of one host, in the order an admin fixes them: network, TLS, logon, then the host."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import datetime

from hvmove import models
from hvmove import models_doctor as md
from hvmove.config import Config, HostConfig
from hvmove.doctor import tls
from hvmove.doctor.contracts import Outcome, run_read_only
from hvmove.doctor.report import HostReport
from hvmove.errors import ConfigError
from hvmove.hyperv import errors as e
from hvmove.hyperv.client import HostClient

# Kerberos refuses tickets beyond this skew by default ("Maximum tolerance for computer clock
# synchronization", 5 minutes); a minute is already worth fixing.
SKEW_FAIL_S = 300.0
SKEW_WARN_S = 60.0
TLS_WARN_DAYS = 30
WS2016_BUILD = 14393  # Windows Server 2016: AvoidRemovingVHDs and the scripts' cmdlets
# A shell left idle longer than IdleTimeout is deleted. hvmove calls at least every 30 s while
# it waits (slot backoff cap) and every few seconds while it follows a move.
IDLE_MIN_MS = 60_000

DELEGATION_REMEDY = (
    "configure Kerberos constrained delegation on the host's computer account to the file "
    "server's 'cifs' service with 'Use any authentication protocol' (or resource-based: "
    "Enable-SmbDelegation -SmbServer <fileserver> -SmbClient {host}), give the host's computer "
    "account Full Control on the share and folder; NTLM cannot delegate (use auth: kerberos or "
    "negotiate with Kerberos)"
)


def check_host(
    config: Config, host: HostConfig, connect: Callable[[Config, str], HostClient]
) -> HostReport:
    report = HostReport(host=host.name, address=f"{host.address}:{host.effective_port}")
    if not _reachable(report, host) or not _tls(report, config, host):
        return report
    try:
        client = connect(config, host.name)
    except ConfigError as exc:
        report.add("logon", "fail", str(exc), "set the password the host entry names")
        return report
    with client:
        facts = run_read_only(client, "Get-HostFacts")
        if not _logon(report, host, client, facts):
            return report
        inventory = run_read_only(client, "Get-VMInventory", VmId="")
        shares = _shares(host, inventory)
        t0 = time.time()
        readiness = run_read_only(client, "Get-HostReadiness", SharePath=shares)
        t1 = time.time()
        if isinstance(readiness.result, md.HostReadiness):
            _from_readiness(report, host, readiness.result, (t0 + t1) / 2)
        # without the host's MaximumStorageMigrations, assume the common default of 2
        concurrency = host.max_storage_migrations or 2
        if isinstance(facts.result, models.HostFacts):
            concurrency = _from_facts(report, config, host, facts.result)
            if isinstance(readiness.result, md.HostReadiness):
                _cluster_storage(report, facts.result, readiness.result)
        if isinstance(readiness.result, md.HostReadiness):
            _winrm(report, readiness.result.winrm, concurrency)
            _keep_source(report, config, readiness.result)
        for outcome in [facts, inventory, readiness, *_other_scripts(client, inventory)]:
            _contract(report, outcome)
    return report


# -- network, TLS, logon --------------------------------------------------------------------------
def _reachable(report: HostReport, host: HostConfig) -> bool:
    try:
        with socket.create_connection((host.address, host.effective_port), timeout=10):
            pass
    except OSError as exc:
        report.add(
            "reachable",
            "fail",
            f"no connection to {host.address}:{host.effective_port} ({exc})",
            "on the host: Enable-PSRemoting, a WinRM listener on this port (HTTPS 5986: "
            "New-Item -Path WSMan:\\localhost\\Listener -Transport HTTPS ...), and a firewall "
            "rule that lets the orchestrator in; check the address and port in hvmove.yaml",
        )
        return False
    report.add("reachable", "pass", f"{host.address}:{host.effective_port} accepts connections")
    return True


def _tls(report: HostReport, config: Config, host: HostConfig) -> bool:
    if host.transport != "https":
        report.add(
            "tls",
            "warn",
            "plain HTTP: messages are sealed by the logon, but no certificate proves the host",
            "use transport: https with a certificate issued for the host's name",
        )
        return True
    ca = config.resolve_path(host.ca_file) if host.ca_file else None
    result = tls.probe(host.address, host.effective_port, ca, host.cert_validation)
    names = ", ".join(result.names) or "no names"
    if not result.ok:
        remedies = {
            "name": f"issue the WinRM HTTPS listener a certificate whose subject alternative names "
            f"include {host.address!r} (or set address: to a name the certificate carries: "
            f"{names})",
            "expired": "renew the listener's certificate and rebind it "
            "(Set-Item WSMan:\\localhost\\Listener\\<listener>\\CertificateThumbprint)",
            "untrusted": "trust the issuing CA on the orchestrator (ca_file: in the host entry, "
            "or the system store)",
            "handshake": "check that the port serves WinRM over HTTPS",
        }
        report.add(
            "tls",
            "fail",
            f"certificate not accepted: {result.detail} (the certificate is for {names})",
            remedies[result.problem],
        )
        return False
    days = result.days_left()
    if not host.cert_validation:
        report.add(
            "tls",
            "warn",
            "certificate validation is off (insecure: true)",
            "set ca_file: and turn cert_validation back on",
        )
    elif days is not None and days < TLS_WARN_DAYS:
        report.add(
            "tls",
            "warn",
            f"certificate for {names} expires in {days:.0f} days",
            "renew the listener's certificate before it expires",
            days_left=round(days, 1),
        )
    else:
        report.add(
            "tls",
            "pass",
            f"trusted, issued for {names}"
            + (f", {days:.0f} days left" if days is not None else ""),
            days_left=round(days, 1) if days is not None else None,
        )
    return True


def _logon(report: HostReport, host: HostConfig, client: HostClient, first: Outcome) -> bool:
    err = first.error
    if isinstance(err, e.AuthenticationFailed):
        report.add(
            "logon",
            "fail",
            f"{host.auth} logon as {host.username} refused: {err.detail}",
            "check username (DOMAIN\\user for negotiate/kerberos) and the password source; the "
            "listener must allow this method (winrm get winrm/config/service/auth)",
        )
        return False
    if isinstance(err, (e.HostUnreachable, e.TlsError)) or (
        isinstance(err, e.TransientError) and not client.auth_used()
    ):
        report.add("logon", "fail", f"no session: {err.detail}", "see the checks above; retry")
        return False
    report.add("logon", "pass", f"{client.auth_used() or host.auth} as {host.username}")
    return True


# -- the host -------------------------------------------------------------------------------------
def _from_readiness(
    report: HostReport, host: HostConfig, r: md.HostReadiness, local_mid: float
) -> None:
    skew = datetime.fromisoformat(r.utc_now.replace("Z", "+00:00")).timestamp() - local_mid
    status = "fail" if abs(skew) > SKEW_FAIL_S else "warn" if abs(skew) > SKEW_WARN_S else "pass"
    report.add(
        "clock",
        status,
        f"host clock {skew:+.1f} s from the orchestrator's",
        ""
        if status == "pass"
        else "sync both clocks with the domain's time source "
        "(w32tm /resync on the host; NTP on the orchestrator)",
        skew_seconds=round(skew, 1),
    )
    major_minor = tuple(int(x) for x in [*r.ps_version.split("."), "0", "0"][:2])
    if major_minor < (5, 1):
        report.add(
            "powershell",
            "fail",
            f"PowerShell {r.ps_version}",
            "install Windows Management Framework 5.1: the scripts target Windows PowerShell 5.1",
        )
    else:
        report.add("powershell", "pass", f"PowerShell {r.ps_version}")
    build = int([*r.os_version.split("."), "0", "0", "0"][2] or 0)
    if build < WS2016_BUILD:
        report.add(
            "os",
            "fail",
            f"{r.os_caption or 'Windows'} {r.os_version}",
            "hvmove needs Windows Server 2016 or later (build 14393+)",
        )
    else:
        report.add("os", "pass", f"{r.os_caption or 'Windows'} {r.os_version}")
    if r.hyperv_module is None:
        report.add(
            "hyper-v module",
            "fail",
            "the Hyper-V PowerShell module is not installed",
            "Install-WindowsFeature -Name Hyper-V-PowerShell",
        )
    else:
        report.add("hyper-v module", "pass", f"Hyper-V module {r.hyperv_module}")
    _rights(report, r)
    _share_checks(report, host, r.shares)


def _rights(report: HostReport, r: md.HostReadiness) -> None:
    if r.is_admin:
        report.add("rights", "pass", f"{r.account} is a local administrator")
    elif r.is_hyperv_admin:
        report.add(
            "rights",
            "pass",
            f"{r.account} is in Hyper-V Administrators (not a local administrator: the WinRM "
            "quotas cannot be read, and deleting source files needs NTFS rights on them)",
        )
    else:
        report.add(
            "rights",
            "fail",
            f"{r.account} is neither a local administrator nor in Hyper-V Administrators",
            f"on the host: Add-LocalGroupMember -Group 'Hyper-V Administrators' -Member "
            f"'{r.account}' (or the localized group name; SID S-1-5-32-578), then log on again",
        )


def _share_checks(report: HostReport, host: HostConfig, shares: list[md.ShareAccess]) -> None:
    if not shares:
        report.add("smb shares", "pass", "no SMB share configured (shares:) or used by a VM")
        return
    for s in shares:
        if s.reachable:
            report.add(f"share {s.path}", "pass", "this session can list it (delegation works)")
        elif "Unauthorized" in s.error_id or "denied" in s.error.lower():
            report.add(
                f"share {s.path}",
                "fail",
                f"access denied from the remote session: the double hop ({s.error})",
                DELEGATION_REMEDY.format(host=host.name),
            )
        else:
            report.add(
                f"share {s.path}",
                "fail",
                f"not found from the host ({s.error})",
                "check the share name and that the file server is up; fix shares: in hvmove.yaml",
            )


def _from_facts(report: HostReport, config: Config, host: HostConfig, f: models.HostFacts) -> int:
    limit = f.maximum_storage_migrations
    concurrency = min(limit, host.max_storage_migrations or limit)
    if limit < 1:
        report.add(
            "storage migrations",
            "fail",
            f"MaximumStorageMigrations is {limit}",
            "Set-VMHost -MaximumStorageMigrations 2",
        )
    else:
        report.add(
            "storage migrations",
            "pass",
            f"MaximumStorageMigrations {limit} (running now: {f.running_storage_moves}); hvmove "
            f"runs at most {concurrency} at once here",
            maximum=limit,
            running=f.running_storage_moves,
        )
    report.add(
        "default paths",
        "pass",
        f"new VHDs: {f.virtual_hard_disk_path}; new VMs: {f.virtual_machine_path}",
    )
    _cluster(report, config, f)
    return max(concurrency, 1)


def _cluster(report: HostReport, config: Config, f: models.HostFacts) -> None:
    if not f.cluster_name:
        report.add("cluster", "pass", "not clustered")
        return
    known = {h.name.lower() for h in config.hosts} | {h.address.lower() for h in config.hosts}
    missing = [n for n in f.cluster_nodes if n.lower() not in known]
    detail = f"cluster {f.cluster_name}: nodes {', '.join(f.cluster_nodes) or 'unknown'}"
    if missing or not f.cluster_nodes:
        report.add(
            "cluster",
            "warn",
            detail + (f"; not in hvmove.yaml: {', '.join(missing)}" if missing else ""),
            "add every node to hvmove.yaml: cleanup on a cluster shared volume asks each node "
            "which files its VMs use, and deletes nothing there otherwise",
        )
    else:
        report.add("cluster", "pass", detail)


def _cluster_storage(report: HostReport, f: models.HostFacts, r: md.HostReadiness) -> None:
    """On a cluster node: its shared volumes and VM roles, each with its owner node (a clustered
    VM is moved from its owner; cleanup on a CSV asks every node)."""
    if not f.cluster_name:
        return
    csvs = ", ".join(f"{v.path} (owner {v.owner_node})" for v in r.cluster_volumes)
    owners: dict[str, int] = {}
    for role in r.cluster_roles:
        owners[role.owner_node] = owners.get(role.owner_node, 0) + 1
    roles = ", ".join(f"{node} {n}" for node, n in sorted(owners.items()))
    report.add(
        "cluster storage",
        "pass",
        f"CSVs: {csvs or 'none'}; VM roles by owner node: {roles or 'none'}",
        csvs=len(r.cluster_volumes),
        vm_roles=len(r.cluster_roles),
    )


def _winrm(report: HostReport, q: md.WinRMQuotas, concurrency: int) -> None:
    if q.error or q.max_shells_per_user is None:
        report.add(
            "winrm quotas",
            "warn",
            f"could not be read ({q.error or 'no value'})",
            "run doctor with an administrator account, or check them on the host: "
            "winrm get winrm/config",
        )
        return
    # one RunspacePool (shell) per hvmove process and host: a move each, plus the nightly flow
    # and an inventory; each shell and each running command counts as an operation
    shells = concurrency + 2
    problems = []
    if q.max_shells_per_user < shells:
        problems.append(
            (
                f"MaxShellsPerUser {q.max_shells_per_user} < {shells}",
                f"Set-Item WSMan:\\localhost\\Shell\\MaxShellsPerUser {max(shells, 30)}",
            )
        )
    ops = q.max_concurrent_operations_per_user
    if ops is not None and ops < 2 * shells:
        problems.append(
            (
                f"MaxConcurrentOperationsPerUser {ops} < {2 * shells}",
                "Set-Item WSMan:\\localhost\\Service\\MaxConcurrentOperationsPerUser 1500",
            )
        )
    idle = q.idle_timeout_ms
    if idle is not None and idle < IDLE_MIN_MS:
        problems.append(
            (
                f"IdleTimeout {idle} ms < {IDLE_MIN_MS} ms",
                "Set-Item WSMan:\\localhost\\Shell\\IdleTimeout 7200000",
            )
        )
    numbers = {
        "max_shells_per_user": q.max_shells_per_user,
        "max_concurrent_operations_per_user": ops,
        "idle_timeout_ms": idle,
        "shells_needed": shells,
    }
    if problems:
        report.add(
            "winrm quotas",
            "fail",
            "too low for hvmove: " + "; ".join(p for p, _ in problems),
            "on the host: " + "; ".join(r for _, r in problems),
            **numbers,
        )
    else:
        report.add(
            "winrm quotas",
            "pass",
            f"MaxShellsPerUser {q.max_shells_per_user} (needs {shells}), "
            f"MaxConcurrentOperationsPerUser {ops}, IdleTimeout {idle} ms",
            **numbers,
        )


def _keep_source(report: HostReport, config: Config, r: md.HostReadiness) -> None:
    wanted = config.defaults.keep_source_until_verified
    if r.keep_source:
        report.add(
            "keep source until verified",
            "pass",
            "WMI has AvoidRemovingVHDs: the source stays until hvmove has verified the copy",
        )
    elif not wanted:
        report.add(
            "keep source until verified",
            "pass",
            "off in hvmove.yaml: Move-VMStorage deletes the moved disks' source at the switch",
        )
    else:
        report.add(
            "keep source until verified",
            "fail",
            f"not possible on this host: {r.keep_source_detail or 'unknown'}",
            "set defaults: keep_source_until_verified: false in hvmove.yaml (the source is then "
            "deleted at the switch, before verification), or update the host: the property was "
            "added in Windows 10 1703 and Windows Server 2016",
        )


# -- script contracts -----------------------------------------------------------------------------
def _shares(host: HostConfig, inventory: Outcome) -> list[str]:
    """The shares in hvmove.yaml, and the share roots any VM of the host uses."""
    found = list(host.shares)
    if isinstance(inventory.result, models.Inventory):
        for vm in inventory.result.vms:
            for path in [
                vm.configuration_location,
                *(v.path for v in vm.vhd_files()),
                *vm.dvd_paths,
            ]:
                root = _share_root(path)
                if root:
                    found.append(root)
    return list(dict.fromkeys(s.rstrip("\\") for s in found))


def _share_root(path: str) -> str | None:
    if not path.startswith("\\\\"):
        return None
    parts = path[2:].split("\\")
    return "\\\\" + "\\".join(parts[:2]) if len(parts) >= 2 and parts[1] else None


def _other_scripts(client: HostClient, inventory: Outcome) -> list[Outcome]:
    """Every other read-only script once, on what the host has (its first VM and disk)."""
    out = [run_read_only(client, "Get-VolumeInfo", Path=[])]
    volumes = out[0].result
    if isinstance(volumes, models.VolumeReport) and volumes.volumes:
        roots = [v.volume for v in volumes.volumes]
        out.append(
            run_read_only(client, "Get-OdxStatus", SourcePath=roots[0], DestinationPath=roots[-1])
        )
    vms = inventory.result.vms if isinstance(inventory.result, models.Inventory) else []
    if vms:
        vm = vms[0]
        disks = [v.path for v in vm.vhd_files()][:1]
        out += [
            run_read_only(client, "Get-StorageMoveStatus", VmId=vm.id),
            run_read_only(client, "Get-PrecheckFacts", VmId=[vm.id]),
            run_read_only(client, "Get-VMStoragePaths", VmId=vm.id),
            run_read_only(client, "Get-VHDFacts", Path=disks),
            run_read_only(client, "Find-PathReferences", Path=disks, Folder=[]),
        ]
    return out


def _contract(report: HostReport, outcome: Outcome) -> None:
    name = f"script {outcome.script}"
    if outcome.ok:
        model = type(outcome.result).__name__
        report.add(name, "pass", f"ran; output is a valid {model}")
    elif outcome.mismatch is not None:
        report.add(
            name,
            "fail",
            "output does not match the contract: " + "; ".join(outcome.mismatch),
            "hvmove misreads this host: attach this report (doctor --json) to a bug report; "
            "do not move VMs of this host until it is fixed",
        )
    else:
        err = outcome.error
        report.add(
            name,
            "fail",
            f"failed on the host: {err.detail if err else 'unknown error'}",
            "fix the checks above (rights, module, logon) and run doctor again",
        )
