"""Lab scripts that read many VMs in one call: Get-PrecheckFacts.

The script is Get-VMInventory and Get-StorageMoveStatus for a list of VM ids (the .ps1 carries
the same helper functions), so the lab answers each entry with the same code as those two
scripts, and turns what would have failed the single-VM call into that entry's error.
"""

from __future__ import annotations

from typing import Any, Protocol

from hvmove import models
from hvmove.lab import vhd
from hvmove.lab.estate import LabVM
from hvmove.lab.scripts.base import ScriptBase, as_list, script
from hvmove.lab.wsman import ScriptFailed


class _Inventory(Protocol):
    def _vm_info(self, vm: LabVM) -> models.VMInfo: ...


class BatchScripts(ScriptBase):
    @script("Get-PrecheckFacts")
    def precheck_facts(self, host: str, p: dict[str, Any]) -> models.PrecheckFacts:
        reader: _Inventory = self  # type: ignore[assignment]  # InventoryScripts, in LabScripts
        with self.estate.lock:
            # one pass over the estate for the whole list (Get-VM -Id per id on a host is cheap;
            # the lab's list scan is not)
            by_id = {vm.id.lower(): vm for vm in self.estate.vms_on(host)}
            entries = []
            for asked in as_list(p.get("VmId")):
                try:
                    vm = by_id.get(asked.strip("{}").lower()) or self._vm(host, asked)
                    job = self.engine.newest_job(vm.id)
                    migrating = job is not None and job.running
                    move = models.MoveStatus(
                        vm_id=vm.id,
                        job=job.to_model() if job else None,
                        secondary_status="StorageMigrationPhaseOne" if migrating else None,
                    )
                    entries.append(
                        models.PrecheckFactsEntry(vm_id=asked, vm=reader._vm_info(vm), move=move)
                    )
                except ScriptFailed as exc:
                    entries.append(models.PrecheckFactsEntry(vm_id=asked, error=exc.message))
                except (OSError, ValueError, vhd.VhdCorrupt) as exc:
                    # the script's try/catch: Get-HvmVmInfo failing for this VM only
                    entries.append(models.PrecheckFactsEntry(vm_id=asked, error=str(exc)))
            return models.PrecheckFacts(host=host.upper(), vms=entries)
