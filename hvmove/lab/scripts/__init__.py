"""The lab's implementation of each project script, behind the same parameters and JSON contract.

The endpoint hands every pipeline to ``LabScripts.dispatch``. The script is recognised by its
exact text (a changed or foreign script is refused, as an unknown cmdlet would be), its parameters
are bound against the script's own ``param(`` block, and the reply is built from the same
pydantic models the client parses.

One module per domain: ``inventory`` (reading the estate), ``probes`` (ODX, bandwidth, Test-VHD),
``moves`` (start, follow, stop), ``cleanup`` (references and deletion), ``doctor`` and
``canary`` (issue 11: readiness, account rights, contract faults, the canary VM). A new script
is a method marked ``@script("Name")`` in a mixin of its domain, and the mixin is listed in
``LabScripts``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from hvmove.hyperv.catalog import SPECS, parse_param_names, script_text
from hvmove.lab.engine import Engine
from hvmove.lab.estate import Estate
from hvmove.lab.scripts.batch import BatchScripts
from hvmove.lab.scripts.canary import CanaryScripts
from hvmove.lab.scripts.cleanup import CleanupScripts, ref_key
from hvmove.lab.scripts.doctor import DoctorScripts
from hvmove.lab.scripts.inventory import InventoryScripts
from hvmove.lab.scripts.moves import MoveScripts
from hvmove.lab.scripts.probes import ProbeScripts
from hvmove.lab.wsman import Invocation, ScriptFailed

Handler = Callable[[str, dict[str, Any]], BaseModel]

__all__ = ["LabScripts", "ref_key"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LabScripts(
    InventoryScripts,
    ProbeScripts,
    MoveScripts,
    CleanupScripts,
    DoctorScripts,
    CanaryScripts,
    BatchScripts,
):
    def __init__(self, estate: Estate, engine: Engine) -> None:
        self.estate = estate
        self.engine = engine
        self.by_digest = {_digest(script_text(name)): name for name in SPECS}
        if len(self.by_digest) != len(SPECS):
            raise RuntimeError(
                "two project scripts have the same text; the lab cannot tell them apart"
            )
        self.handlers: dict[str, Handler] = _handlers(self)
        missing = sorted(set(SPECS) - set(self.handlers))
        if missing:
            raise RuntimeError(f"the lab has no implementation of: {', '.join(missing)}")
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (host, script, params) for tests
        self.delays: dict[str, float] = {}  # script -> seconds: a host slow to answer that script
        # script -> message: the script also writes a non-terminating error (like Write-Error)
        self.write_errors: dict[str, str] = {}
        # Start-StorageMove answers "started" with no job: Hyper-V had not created the
        # Msvm_MigrationJob within the script's WaitSeconds (the job appears later)
        self.start_without_job = False
        # Command.UseLocalScope of each call, in order (None: the runspace's global scope)
        self.scopes: list[bool | None] = []
        self.cluster_refreshed = []

    # -- dispatch --------------------------------------------------------------------------------
    def dispatch(self, inv: Invocation) -> str:
        name = self.by_digest.get(_digest(inv.script)) if inv.is_script else None
        if name is None:
            first = inv.script.strip().splitlines()[0][:80] if inv.script.strip() else "<empty>"
            raise ScriptFailed(
                f"The lab does not know this script or command ({first!r}); only hvmove's own "
                "scripts run here.",
                "CommandNotFoundException",
                "ObjectNotFound",
            )
        params = self._bind(name, inv.params)
        self.calls.append((inv.host, name, params))
        self.scopes.append(inv.use_local_scope)
        if self.delays.get(name):
            time.sleep(self.delays[name])
        if name in self.write_errors:
            inv.errors.append(self.write_errors[name])
        self.check_rights(inv.host, name)
        result = self.handlers[name](inv.host, params)
        self.note_started(inv, name, result)
        return self.contract_fault(inv.host, name, result.model_dump_json())

    def _bind(self, name: str, sent: dict[str, Any]) -> dict[str, Any]:
        declared = {p.lower(): p for p in parse_param_names(script_text(name))}
        bound: dict[str, Any] = {}
        for key, value in sent.items():
            canonical = declared.get(key.lower())
            if canonical is None:
                raise ScriptFailed(
                    f"A parameter cannot be found that matches parameter name '{key}'.",
                    "NamedParameterNotFound",
                    "InvalidArgument",
                )
            bound[canonical] = value
        return bound


def _handlers(obj: object) -> dict[str, Handler]:
    """Every method marked with ``@script``, by the script name it implements."""
    found: dict[str, Handler] = {}
    for cls in type(obj).__mro__:
        for attr, fn in vars(cls).items():
            name = getattr(fn, "lab_script", None)
            if name and name not in found:
                found[name] = getattr(obj, attr)
    return found
