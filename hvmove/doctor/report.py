"""The doctor's report: per host a list of checks (pass/warn/fail, detail, remedy), and markdown."""

from __future__ import annotations

from pydantic import Field

from hvmove.models import Check, Model


class HostReport(Model):
    host: str
    address: str
    checks: list[Check] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def add(self, name: str, status: str, detail: str, remedy: str = "", **numbers: object) -> None:
        if status == "fail" and not remedy:
            raise ValueError(f"doctor check {name!r} failed without a remedy")
        self.checks.append(
            Check(name=name, status=status, detail=detail, remedy=remedy, numbers=numbers)  # type: ignore[arg-type]
        )


class DoctorReport(Model):
    hosts: list[HostReport] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "hosts": [{"ok": h.ok, **h.model_dump(mode="json")} for h in self.hosts],
        }

    def markdown(self) -> str:
        lines = ["# hvmove doctor", ""]
        for h in self.hosts:
            verdict = "ready" if h.ok else "NOT ready"
            lines += [f"## {h.host} ({h.address}): {verdict}", ""]
            lines += ["| check | status | detail | remedy |", "|---|---|---|---|"]
            for c in h.checks:
                cells = [c.name, c.status, c.detail, c.remedy]
                lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
            lines.append("")
        failed = sum(1 for h in self.hosts for c in h.checks if c.status == "fail")
        lines.append(
            f"{len(self.hosts)} host(s), {failed} failed check(s): "
            + ("every host is ready for a move." if self.ok else "fix the failures above first.")
        )
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
