"""`hvmove doctor` (read-only readiness of each host) and `hvmove canary` (a scratch VM moved
for real): the first two commands to run against real hosts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hvmove.cli.app import ConfigOpt, JsonOpt, app, friendly, print_json
from hvmove.cli.render import _STYLE, out, plain, table

HostOpt = Annotated[
    list[str] | None,
    typer.Option("--host", "-H", help="check this host (repeatable; default: all)"),
]


@app.command()
@friendly
def doctor(
    config: ConfigOpt = None,
    host: HostOpt = None,
    as_json: JsonOpt = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print the report as markdown (for a bug report)")
    ] = False,
) -> None:
    """Check, read-only, that each host is ready for hvmove; every failure with its remedy.
    Exit 0 when everything a move needs passes, 1 otherwise."""
    from hvmove import doctor as doc
    from hvmove.config import load

    report = doc.run(load(config), host or None)
    if as_json:
        print_json(report.as_json())
    elif markdown:
        sys.stdout.write(report.markdown())
    else:
        for h in report.hosts:
            verdict = "[green]ready[/]" if h.ok else "[bold red]NOT ready[/]"
            t = table(f"{h.host} ({h.address})", ["check", "status", "detail", "remedy"])
            for c in h.checks:
                style = _STYLE[c.status]
                t.add_row(
                    plain(c.name), f"[{style}]{c.status}[/]", plain(c.detail), plain(c.remedy)
                )
            out.print(t)
            out.print(f"{plain(h.host)}: {verdict}")
        failed = sum(1 for h in report.hosts for c in h.checks if c.status == "fail")
        out.print(f"{len(report.hosts)} host(s), {failed} failed check(s)")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@friendly
def canary(
    host: Annotated[str, typer.Option("--host", "-H", help="the host to run the canary on")],
    path: Annotated[str, typer.Option("--path", help="an existing folder on the host (P)")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="an existing folder to move to (Q; default: the host's VM path)"),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="folder for the report (.json and .md)")
    ] = Path("."),
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a scratch VM hvmove-canary-<id> in PATH, move it to TO and back (the path that keeps
    the source until verified, then plain Move-VMStorage), remove everything it made, and report
    what the host did. Leftovers of an interrupted canary are removed first. Exit 1 on failure."""
    from hvmove import canary as c
    from hvmove.config import load

    def progress(step: c.Step) -> None:
        if not as_json:
            mark = "[green]ok[/]" if step.ok else "[bold red]FAILED[/]"
            out.print(f"{mark} {plain(step.name)} ({step.seconds:.1f} s) {plain(step.detail)}")

    report = c.run(load(config), host, path, to, on_step=progress)
    _, md_path = c.write(report, out_dir)
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        t = table("premises observed", ["premise", "observed", "detail"])
        for p in report.premises:
            seen = "n/a" if p.observed is None else ("yes" if p.observed else "[bold red]NO[/]")
            t.add_row(plain(p.name), seen, plain(p.detail))
        out.print(t)
        verdict = "[green]passed[/]" if report.ok else "[bold red]FAILED[/]"
        out.print(f"canary {plain(report.vm_name)}: {verdict}; report: {plain(md_path)}")
        if report.error:
            out.print(f"[bold red]error:[/] {plain(report.error)}")
        if report.left_behind:
            out.print(f"[bold red]left behind:[/] {plain(', '.join(report.left_behind))}")
    if not report.ok:
        raise typer.Exit(1)
