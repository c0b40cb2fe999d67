"""Lab scripts and host behaviours that `hvmove doctor` reads: Get-HostReadiness, the account's
rights on Hyper-V, and the lab's own contract faults (a wrong field in a script's output)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from hvmove import models_doctor as md
from hvmove.lab.estate import ntlm_domain
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import ScriptFailed

# Scripts that call no Hyper-V cmdlet, so an account without Hyper-V rights still runs them.
_NO_HYPERV = {"Get-HostReadiness"}


class DoctorScripts(ScriptBase):
    def check_rights(self, host: str, name: str) -> None:
        """Without local Administrators or Hyper-V Administrators, every Hyper-V cmdlet refuses.
        The message is Hyper-V's (John Howard, Hyper-V team: "Hyper-V Remote Management: You do
        not have the required permission to complete this task. Contact the administrator of
        the authorization policy for the computer 'COMPUTERNAME'", docs.microsoft.com/archive/
        blogs/jhoward, 2008-03-28)."""
        h = self.estate.host(host)
        if h.rights == "none" and name not in _NO_HYPERV:
            raise ScriptFailed(
                "You do not have the required permission to complete this task. Contact the "
                f"administrator of the authorization policy for the computer '{h.name.upper()}'.",
                "Unspecified,Microsoft.HyperV.PowerShell.Commands.GetVM",
                "PermissionDenied",
            )

    def contract_fault(self, host: str, name: str, text: str) -> str:
        """The host's lab setting ``contract_faults``: print a wrong value in a field."""
        fault = self.estate.host(host).contract_faults.get(name)
        if not fault:
            return text
        doc = json.loads(text)
        doc.update(fault)
        return json.dumps(doc)

    @script("Get-HostReadiness")
    def host_readiness(self, host: str, p: dict[str, Any]) -> md.HostReadiness:
        h = self.estate.host(host)
        now = datetime.fromtimestamp(time.time() + h.clock_offset_s, UTC)
        if h.rights == "admin":
            winrm = md.WinRMQuotas(
                max_shells_per_user=h.winrm_max_shells_per_user,
                max_concurrent_operations_per_user=h.winrm_max_concurrent_operations_per_user,
                idle_timeout_ms=h.winrm_idle_timeout_ms,
            )
        else:  # the WinRM configuration is readable by administrators only
            winrm = md.WinRMQuotas(error="Access is denied.")
        return md.HostReadiness(
            computer_name=h.name.upper(),
            utc_now=now.isoformat(),
            ps_version=h.ps_version,
            os_version=h.os_version,
            os_caption=h.os_caption,
            hyperv_module=h.hyperv_module,
            account=f"{ntlm_domain(self.estate.dir)}\\{self.estate.settings.username}",
            is_admin=h.rights == "admin",
            # an administrator's token holds Administrators; Hyper-V Administrators only when
            # the account is a member of that group too
            is_hyperv_admin=h.rights == "hyperv_admins",
            winrm=winrm,
            ui_culture=h.ui_culture,
            keep_source=h.avoid_removing_vhds,
            keep_source_detail=""
            if h.avoid_removing_vhds
            else "Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property",
            cluster_volumes=self._cluster_volumes(host),
            cluster_roles=self._cluster_roles(host),
            shares=[self._share_access(host, path) for path in as_list(p.get("SharePath"))],
        )

    def _cluster_volumes(self, host: str) -> list[md.ClusterVolume]:
        if not self.estate.host(host).cluster_name:
            return []
        return [
            md.ClusterVolume(
                name=v.label or v.root,
                path=v.root.rstrip("\\"),
                owner_node=v.hosts[0].upper(),
            )
            for v in self.estate.data.volumes
            if v.kind == "csv" and host.lower() in (x.lower() for x in v.hosts)
        ]

    def _cluster_roles(self, host: str) -> list[md.ClusterRole]:
        cluster = self.estate.host(host).cluster_name
        if not cluster:
            return []
        nodes = {h.name.lower() for h in self.estate.data.hosts if h.cluster_name == cluster}
        return [
            md.ClusterRole(name=vm.name, owner_node=vm.host.upper())
            for vm in self.estate.data.vms
            if vm.host.lower() in nodes
        ]

    def _share_access(self, host: str, path: str) -> md.ShareAccess:
        if self._double_hop(host, path):
            # Test-Path writes ItemExistsUnauthorizedAccessError on "access denied" (PowerShell's
            # FileSystemProvider.ItemExists; review windows-scripts.md finding 2)
            return md.ShareAccess(
                path=path,
                reachable=False,
                error="Access is denied",
                error_id="ItemExistsUnauthorizedAccessError,Microsoft.PowerShell.Commands."
                "TestPathCommand",
            )
        try:
            reachable = self.estate.local(host, path).is_dir()
        except ValueError:
            reachable = False
        return md.ShareAccess(
            path=path, reachable=reachable, error="" if reachable else "not found"
        )
