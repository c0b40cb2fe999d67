"""The canary's report: each step, each premise observed, what was cleaned up; JSON and markdown
that can be attached to a bug report."""

from __future__ import annotations

from pydantic import Field

from hvmove.models import Model
from hvmove.models_doctor import CanaryRemoval


class Step(Model):
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


class Premise(Model):
    name: str
    observed: bool | None  # None: could not be observed here
    detail: str
    impact: str  # what the answer means for hvmove


class CanaryReport(Model):
    canary_id: str
    vm_name: str
    host: str
    path: str
    to: str
    started: str
    finished: str = ""
    ok: bool = False
    error: str = ""
    leftovers_removed: CanaryRemoval = Field(default_factory=CanaryRemoval)
    steps: list[Step] = Field(default_factory=list)
    premises: list[Premise] = Field(default_factory=list)
    removal: CanaryRemoval = Field(default_factory=CanaryRemoval)
    left_behind: list[str] = Field(default_factory=list)  # what the final check still found

    def markdown(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        lines = [
            f"# hvmove canary {self.vm_name} on {self.host}: {verdict}",
            "",
            f"- from `{self.path}` to `{self.to}`",
            f"- started {self.started}, finished {self.finished}",
        ]
        if self.error:
            lines.append(f"- error: {self.error}")
        left = self.leftovers_removed
        if left.vms_removed or left.folders_removed or left.kept:
            lines.append(
                f"- leftovers of an earlier canary: removed {len(left.vms_removed)} VM(s) and "
                f"{len(left.folders_removed)} folder(s); kept {len(left.kept)}"
                + "".join(f"\n  - kept `{k.path}`: {k.reason}" for k in left.kept)
            )
        lines += ["", "## Premises observed", "", "| premise | observed | detail | impact |"]
        lines.append("|---|---|---|---|")
        for p in self.premises:
            seen = "n/a" if p.observed is None else ("yes" if p.observed else "NO")
            lines.append(f"| {_c(p.name)} | {seen} | {_c(p.detail)} | {_c(p.impact)} |")
        lines += ["", "## Steps", "", "| step | ok | seconds | detail |", "|---|---|---|---|"]
        for s in self.steps:
            lines.append(
                f"| {_c(s.name)} | {'yes' if s.ok else 'NO'} | {s.seconds:.1f} | {_c(s.detail)} |"
            )
        r = self.removal
        lines += [
            "",
            "## Clean-up",
            "",
            f"- VMs removed: {', '.join(i.reason for i in r.vms_removed) or 'none'}",
            f"- folders removed: {', '.join(f'`{f}`' for f in r.folders_removed) or 'none'}",
            f"- left behind: {', '.join(f'`{x}`' for x in self.left_behind) or 'nothing'}",
        ]
        return "\n".join(lines) + "\n"


def _c(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
