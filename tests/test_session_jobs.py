"""Start-StorageMove removes the session's finished jobs (issue 10 #5).

Move-VMStorage -AsJob puts a job in the runspace's job cache, and "the job remains in the global
job cache until you close the session" (Remove-Job, learn.microsoft.com/powershell/module/
microsoft.powershell.core/remove-job). hvmove keeps one runspace pool per host for a whole night,
so the script removes the finished ones before it starts another, and never a running one:
Remove-Job -Force stops a Running or NotStarted job (RemoveJobCommand.Force), and stopping a
VmJob cancels its migration (hyperv.md section 2.4).
"""

from __future__ import annotations

import pytest

from hvmove.moves import follow
from tests.conftest import Lab
from tests.test_scripts_static import SCRIPTS, _text, command_calls, parse, walk

FINISHED = {"completed", "failed", "stopped"}  # System.Management.Automation.JobState


def job_removal_problems(text: str) -> list[str]:
    """Why the script would keep finished jobs, or could stop a running one."""
    root = parse(text).root_node
    pipelines = [
        n
        for n in walk(root)
        if n.type == "pipeline_chain"
        and any(c.type == "command" and _text(c).startswith("Remove-Job") for c in n.children)
    ]
    if not pipelines:
        return ["no Remove-Job: finished jobs stay in the session"]
    problems: list[str] = []
    for pipe in pipelines:
        commands = [c for c in pipe.children if c.type == "command"]
        names = [_text(c).split()[0] for c in commands]
        if names[:1] != ["Get-Job"]:
            problems.append(f"Remove-Job is not fed by Get-Job: {_text(pipe)!r}")
        if "-force" in _text(commands[-1]).lower():
            problems.append("Remove-Job -Force stops a running job (and so its migration)")
        states: set[str] = set()
        for comp in (n for n in walk(pipe) if n.type == "comparison_expression"):
            parts = [_text(c).strip() for c in comp.children]
            if len(parts) != 3 or parts[0] != "$_.State" or parts[1].lower() != "-eq":
                problems.append(f"the filter is not 'State -eq <finished>': {_text(comp)!r}")
                continue
            states.add(parts[2].strip("'\"").lower())
        if not states:
            problems.append("Remove-Job takes every job of the session, running ones included")
        elif states - FINISHED:
            problems.append(f"Remove-Job takes jobs that are not finished: {sorted(states)}")
        elif states != FINISHED:
            problems.append(f"finished jobs in states {sorted(FINISHED - states)} stay")
    calls = list(command_calls(text))
    removal = min(n.start_byte for name, _p, n in calls if name == "Remove-Job")
    start = min(n.start_byte for name, _p, n in calls if name == "Move-VMStorage")
    if removal > start:
        problems.append("finished jobs are removed after Move-VMStorage -AsJob, not before")
    return problems


def _script() -> str:
    return (SCRIPTS / "Start-StorageMove.ps1").read_text(encoding="utf-8")


def test_start_storage_move_removes_only_finished_jobs_before_it_starts() -> None:
    assert job_removal_problems(_script()) == []


LINE = (
    "Get-Job | Where-Object { $_.State -eq 'Completed' -or $_.State -eq 'Failed' "
    "-or $_.State -eq 'Stopped' } | Remove-Job\n"
)


@pytest.mark.parametrize(
    "new",
    [
        "",  # the script before issue 10
        LINE.replace("| Remove-Job", "| Remove-Job -Force"),
        "Get-Job | Remove-Job -Force\n",
        LINE.replace("-eq 'Completed'", "-ne 'Running'"),
        LINE.replace(" -or $_.State -eq 'Stopped'", ""),
    ],
)
def test_the_job_removal_check_flags_missing_or_unsafe_removal(new: str) -> None:
    text = _script()
    assert LINE in text
    assert job_removal_problems(text.replace(LINE, new)) != []


def test_the_lab_session_holds_only_running_jobs(client, lab: Lab) -> None:
    """Three moves started through one session (one runspace pool) and finished: the session's
    job cache holds only the one still running, not all three."""
    sessions: list[dict[str, list[str]]] = []
    for name in ("web01", "app01", "sql01"):
        vm = lab.vm(name)
        start = client.start_move(vm.id, "all", destination=f"E:\\VMs\\{name}")
        assert start.status == "started"
        sessions.append(lab.server.scripts.session_jobs())
        if name != "sql01":
            assert follow(client, vm.id, poll_s=0.02, timeout_s=60).job_state == "Completed"
    shells = {shell for s in sessions for shell in s}
    assert len(shells) == 1  # one pool, one shell, one session
    assert [len(s[next(iter(shells))]) for s in sessions] == [1, 1, 1]
    follow(client, lab.vm("sql01").id, poll_s=0.02, timeout_s=60)
