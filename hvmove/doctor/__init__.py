"""`hvmove doctor`: read-only checks that a host is ready for hvmove, each failure with a remedy.

Per host: reachability, TLS (trusted, issued for the configured name, not expiring within 30
days), the logon that worked, clock skew, PowerShell/OS/Hyper-V module, the account's rights,
WinRM quotas against what hvmove opens, MaximumStorageMigrations, default paths, cluster
membership with CSVs and VM owner nodes, SMB shares the session must reach (the double hop), and
every read-only project script run once with its JSON validated against the models.

Nothing is created, changed or deleted: only scripts the catalog marks read-only are run
(``contracts.run_read_only`` refuses any other).
"""

from __future__ import annotations

from collections.abc import Callable

from hvmove.config import Config, HostConfig
from hvmove.doctor.checks import check_host
from hvmove.doctor.report import DoctorReport, HostReport
from hvmove.hyperv.client import HostClient, open_client

__all__ = ["DoctorReport", "HostReport", "run"]

Connect = Callable[[Config, str], HostClient]


def run(
    config: Config, hosts: list[str] | None = None, connect: Connect = open_client
) -> DoctorReport:
    """Check the named hosts (default: every host in hvmove.yaml)."""
    chosen: list[HostConfig] = (
        [config.host(name) for name in hosts] if hosts else list(config.hosts)
    )
    return DoctorReport(hosts=[check_host(config, h, connect) for h in chosen])
