"""Run a read-only project script and say, when its JSON does not match the model, which field
holds which value: the first thing to attach to a bug report from a host hvmove misreads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from hvmove.hyperv import errors as e
from hvmove.hyperv.catalog import SPECS
from hvmove.hyperv.client import HostClient


class NotReadOnly(Exception):
    """The doctor was asked to run a script that changes the host."""


@dataclass
class Outcome:
    script: str
    result: BaseModel | None = None
    error: e.HostError | None = None
    mismatch: list[str] | None = None  # "field: value (what is wrong)" per problem

    @property
    def ok(self) -> bool:
        return self.result is not None


def run_read_only(client: HostClient, script: str, **params: Any) -> Outcome:
    """One call of a script that changes nothing; its typed error or contract mismatch kept."""
    if SPECS[script].mutating:
        # the doctor's promise: nothing is created, changed or deleted
        raise NotReadOnly(f"{script} changes the host; the doctor runs read-only scripts only")
    try:
        return Outcome(script, result=client.run(script, **params))
    except e.ProtocolError as exc:
        # the client raises it "from None" while handling the ValidationError: still the context
        cause = exc.__context__
        problems = _describe(cause) if isinstance(cause, ValidationError) else [exc.detail]
        return Outcome(script, error=exc, mismatch=problems)
    except e.HostError as exc:
        return Outcome(script, error=exc)


def _describe(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors()[:5]:
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        value = err.get("input")
        shown = "missing" if err["type"] == "missing" else f"{value!r}"[:80]
        out.append(f"{where or 'document'} = {shown} ({err['msg']})")
    return out
