"""Deployed as in production: `hvmove deploy` registers deployments/prefect.yaml on a real Prefect
server, and a real `prefect worker` whose environment holds none of the deploy-time variables
(not even the project folder as its working directory) runs the night, each move a run of the
migrate-vm deployment. Cancelling a night through the API mid-copy stops the Hyper-V job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hvmove.store import Store
from tests.conftest import Lab, make_lab

# Both modules deploy the same deployment names (nightly-migrations/nightly, migrate-vm) to the
# session's Prefect server, and a deployment's concurrency limit spans them: in one xdist worker,
# one module after the other (./dev runs --dist loadgroup), never interleaved.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect-deployments")]

ROOT = Path(__file__).resolve().parents[1]
GiB = 1024**3
BIN = Path(sys.executable).parent


@dataclass
class Deployed:
    api: str
    lab: Lab
    plan: Path
    workers: list[subprocess.Popen]
    home: Path


def clean_env(api: str, home: Path) -> dict[str, str]:
    """What a worker on another machine has: a PATH, a home, the API. No HVMOVE_* at all."""
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": api,
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }


def start_worker(
    api: str, home: Path, name: str, pool: str = "hvmove", limit: int = 2
) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        # --limit 2: two workers must then share a night and its three moves
        [
            str(BIN / "prefect"),
            "worker",
            "start",
            "--pool",
            pool,
            "--name",
            name,
            "--limit",
            str(limit),
        ],
        cwd=home,  # not the project folder: the deployment must say where the code is
        env=clean_env(api, home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen) -> None:
    # a worker may ignore the first SIGTERM (reference/prefect.md §5); the second is SIGKILL
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            continue


def hvmove_deploy(api: str, config: Path, plan: Path, pool: str = "hvmove") -> None:
    """`hvmove deploy` as an operator runs it: from the config's folder, in a shell that holds
    none of the deploy-time variables (hvmove deploy must give Prefect every one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVMOVE_")}
    done = subprocess.run(
        [
            *(str(BIN / "hvmove"), "deploy", "--config", str(config)),
            *("--plan", str(plan), "--pool", pool),
        ],
        env={**env, "PREFECT_API_URL": api},
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def deployed(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    lab = make_lab(tmp_path_factory.mktemp("deployed-lab"), rate_scale=8, populate=_estate)
    plan = lab.dir / "nightly.yaml"
    # one move of each kind a worker must name and run: mode all, blocked, and mode vhds (whose
    # parameters reach the worker as VhdMapping models: naming that run once crashed it)
    plan.write_text(
        "moves:\n  - {host: hv01, vm: web01, destination: 'E:\\VMs\\web01'}\n"
        "  - {host: hv01, vm: iso01, destination: 'E:\\VMs\\iso01'}\n"
        "  - host: hv02\n    vm: file01\n    mode: vhds\n    vhds:\n"
        "      - {source: 'D:\\VMs\\file01\\Virtual Hard Disks\\file01.vhdx',"
        " destination: 'F:\\Data\\file01.vhdx'}\n"
    )
    # the production set-up the README recommends: the password in a Prefect Secret block, so
    # every run on the worker (nights, moves, cancellation hooks) resolves it from the server
    from prefect.blocks.system import Secret

    from hvmove.credentials import read_env_file
    from tests.test_prefect_secrets import use_secret_block

    Secret(value=read_env_file(lab.dir / ".env")["HVMOVE_LAB_PASSWORD"]).save(
        "deployed-lab-password", overwrite=True
    )
    use_secret_block(lab, "deployed-lab-password")
    hvmove_deploy(prefect_api, lab.dir / "hvmove.yaml", plan)
    home = tmp_path_factory.mktemp("worker-home")
    workers = [start_worker(prefect_api, home, "w1")]
    try:
        yield Deployed(prefect_api, lab, plan, workers, home)
    finally:
        for w in workers:
            stop_worker(w)
        lab.server.stop()


def _estate(estate) -> None:
    """The suite's usual estate plus file01, the vhds-mode move of the deployed night."""
    from hvmove.lab.build import add_vm

    add_vm(estate, "hv01", "web01", disks=[(40 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv01", "sql01", disks=[(60 * GiB, 1, "Fixed"), (20 * GiB, 0.4, "Dynamic")])
    add_vm(estate, "hv01", "app01", state="Off", checkpoints=2)
    add_vm(estate, "hv01", "iso01", dvd=["D:\\ISO\\setup.iso"])
    add_vm(estate, "hv02", "dc01", disks=[(20 * GiB, 0.5, "Dynamic")])
    add_vm(estate, "hv02", "file01", disks=[(10 * GiB, 0.5, "Dynamic")])


def wait_final(run_id, timeout: float = 180):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.5)
        raise AssertionError(f"flow run {run_id} did not end: {run.state}\n{_story(client, run)}")


def _story(client, run) -> str:
    """What a run that did not end was doing: its children's states and its last log lines."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort

    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])
        )
    )
    lines = [f"child {c.name} {c.parameters.get('vm')}: {c.state}" for c in children]
    for r in [run, *children]:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id])),
            sort=LogSort.TIMESTAMP_DESC,
            limit=25,
        )
        lines += [f"{r.name} {lg.timestamp:%H:%M:%S} {lg.message[:300]}" for lg in reversed(logs)]
    return "\n".join(lines)


def worker_logs(d: Deployed) -> str:
    return "".join(p.read_text(errors="replace")[-3000:] for p in d.home.glob("*.log"))


def test_deployment_holds_its_values_literally(deployed: Deployed) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-migrations/nightly")
        move = client.read_deployment_by_name("migrate-vm/migrate-vm")
    assert nightly.parameters["plan"] == str(deployed.plan)
    assert nightly.parameters["move_deployment"] == "migrate-vm/migrate-vm"
    assert "timezone" not in nightly.parameters and "window" not in nightly.parameters
    schedule = nightly.schedules[0].schedule
    # the lab's config: window 22:00-05:00 in UTC; the schedule is 10 minutes ahead of the
    # window's start (start_ahead_minutes), there
    assert (schedule.cron, schedule.timezone) == ("50 21 * * *", "UTC")
    assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert nightly.job_variables["working_dir"] == str(ROOT)
    assert not nightly.pull_steps  # nothing resolved on the worker at run time
    assert move.parameters["config"] == str(deployed.lab.dir / "hvmove.yaml")
    # the worker gets the password from the Secret block the config names, never from a value
    config = (deployed.lab.dir / "hvmove.yaml").read_text()
    assert "secret_block: deployed-lab-password" in config and "HVMOVE_LAB_PASSWORD" not in config


def test_night_runs_on_a_worker_with_an_empty_environment(deployed: Deployed) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    lab = deployed.lab
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-migrations/nightly")
        move = client.read_deployment_by_name("migrate-vm/migrate-vm")
        # tonight's window would keep the run waiting until 22:00: run it with 'now'
        run = client.create_flow_run_from_deployment(
            nightly.id, parameters={"window": "now", "poll_seconds": 0.5}
        )
    run = wait_final(run.id)
    assert run.state.is_completed(), (run.state, worker_logs(deployed))
    # iso01 is blocked by prechecks: a Completed night, whose name says so
    assert run.state.name == "Completed with 1 blocked", run.state
    moves = {r.vm_name: r for r in Store(lab.config.store_url()).moves()}
    assert moves["web01"].status == "completed" and moves["web01"].verified
    # the batch id comes from the scheduled start, so a retried night is the same batch; the
    # night carries it as a tag, its name says date, window and size (issue 9)
    assert moves["web01"].batch == f"night-{run.expected_start_time:%Y%m%dT%H%M}"
    assert f"batch:{moves['web01'].batch}" in run.tags
    assert run.name.startswith("night ") and run.name.endswith("(2 moves)")
    # the vhds-mode move, named from its validated parameters on the worker
    assert moves["file01"].status == "completed" and moves["file01"].verified
    file01 = lab.vm("file01")
    assert [d.path for d in file01.drives] == ["F:\\Data\\file01.vhdx"]
    assert "iso01" not in moves or moves["iso01"].status != "completed"
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])
            )
        )
    # web01's move ran as its own run of the migrate-vm deployment, linked to the night
    web = [c for c in children if c.parameters.get("vm") == "web01"]
    assert web and web[0].deployment_id == move.id and web[0].state.is_completed()


def test_cancelling_the_night_mid_copy_stops_the_job(deployed: Deployed) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    lab = deployed.lab
    vm = lab.vm("sql01")
    plan = lab.dir / "cancel.yaml"
    plan.write_text("moves:\n  - {host: hv01, vm: sql01, destination: 'F:\\VMs\\sql01'}\n")
    store = Store(lab.config.store_url())
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly-migrations/nightly")
        run = client.create_flow_run_from_deployment(
            nightly.id, parameters={"window": "now", "poll_seconds": 0.5, "plan": str(plan)}
        )
        deadline = time.monotonic() + 120
        while not any(j.percent >= 10 for j in lab.server.engine.jobs_of(vm.id)):
            assert time.monotonic() < deadline, worker_logs(deployed)
            time.sleep(0.2)
        client.set_flow_run_state(run.id, Cancelling(message="storage latency"), force=True)
    run = wait_final(run.id, timeout=120)
    assert run.state.is_cancelled(), run.state
    deadline = time.monotonic() + 60
    while (record := next(r for r in store.moves() if r.vm_name == "sql01")).status != "cancelled":
        assert time.monotonic() < deadline, (record.status, record.reason, worker_logs(deployed))
        time.sleep(0.5)
    assert "storage latency" in record.reason
    job = lab.server.engine.jobs_of(vm.id)[-1]
    assert job.state == "Terminated" and job.percent < 100  # stopped, not finished
    with lab.client() as client:  # the VM stays on its source, the partial copy is gone
        assert client.vm_paths(vm.id).disk_paths[0].startswith("D:\\")
    assert not [p for p in (lab.dir / "hosts/hv01/F").rglob("*") if p.is_file()]


def test_cancelling_one_move_mid_copy_stops_its_job(deployed: Deployed) -> None:
    """A migrate-vm run cancelled on its own: its on_cancellation hook, run by the worker in a
    fresh process, rebuilds the move from the store and stops the Hyper-V job."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    lab = deployed.lab
    vm = lab.vm("dc01")
    store = Store(lab.config.store_url())
    # slow storage: the copy must outlast the worker's kill and the hook's fresh process
    lab.server.control("settings", {"rate_scale": 1})
    with get_client(sync_client=True) as client:
        move = client.read_deployment_by_name("migrate-vm/migrate-vm")
        run = client.create_flow_run_from_deployment(
            move.id,
            parameters={
                "host": "hv02",
                "vm": "dc01",
                "destination": "F:\\VMs\\dc01",
                "poll_seconds": 0.5,
            },
        )
        deadline = time.monotonic() + 120
        while not any(j.percent >= 5 for j in lab.server.engine.jobs_of(vm.id)):
            assert time.monotonic() < deadline, worker_logs(deployed)
            time.sleep(0.2)
        client.set_flow_run_state(run.id, Cancelling(message="change freeze"), force=True)
    run = wait_final(run.id, timeout=120)
    assert run.state.is_cancelled(), run.state
    deadline = time.monotonic() + 60
    while (record := next(r for r in store.moves() if r.vm_name == "dc01")).status != "cancelled":
        assert time.monotonic() < deadline, (record.status, record.reason, worker_logs(deployed))
        time.sleep(0.5)
    assert "change freeze" in record.reason and record.flow_run_id == str(run.id)
    assert lab.server.engine.jobs_of(vm.id)[-1].state == "Terminated"
    with lab.client("hv02") as client:
        assert client.vm_paths(vm.id).disk_paths[0].startswith("D:\\")
    # (F:\Data holds file01, which the night of an earlier test moved there)
    assert not [p for p in (lab.dir / "hosts/hv02/F/VMs").rglob("*") if p.is_file()]


def test_a_bad_move_parameter_is_refused_before_anything_starts(deployed: Deployed) -> None:
    """The Run form is typed: the server refuses a mode that is not a choice; a path Windows
    would refuse fails the run with the one line the CLI gives for the same plan entry."""
    from prefect.client.orchestration import get_client

    from flows.migrate_vm import migrate_vm
    from hvmove.plans import load_plan

    with get_client(sync_client=True) as client:
        move = client.read_deployment_by_name("migrate-vm/migrate-vm")
        before = len(client.read_flow_runs())
        with pytest.raises(Exception, match=r"(?i)validation"):
            client.create_flow_run_from_deployment(
                move.id, parameters={"host": "hv01", "vm": "web01", "mode": "everything"}
            )
        assert len(client.read_flow_runs()) == before  # no run was created
    lab = deployed.lab
    bad = "E:\\VMs\\web|01"
    plan = lab.dir / "bad.yaml"
    plan.write_text(f"moves:\n  - {{host: hv01, vm: web01, destination: '{bad}'}}\n")
    with pytest.raises(Exception) as cli_error:
        load_plan(plan)
    cli_words = str(cli_error.value).split("(web01@hv01): ", 1)[1]
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination=bad,
        config=str(lab.dir / "hvmove.yaml"),
        return_state=True,
    )
    assert state.is_failed() and cli_words in state.message, (cli_words, state.message)
    assert not lab.server.engine.jobs_of(lab.vm("web01").id) or all(
        j.state == "Completed" for j in lab.server.engine.jobs_of(lab.vm("web01").id)
    )


# -- scale-out: two workers, one shared PostgreSQL store -----------------------------------------
PG_ENV = "HVMOVE_TEST_POSTGRES_URL"


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _tree(root: int) -> list[int]:
    """ROOT and every process below it (the worker and the flow runs it started)."""
    procs = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [c for c in procs if _ppid(c) == pid]
    return out


def _worker_of(run, d: Deployed) -> subprocess.Popen | None:
    """The worker that started RUN: the worker among the ancestors of the process the run
    executes in (its infrastructure pid); for a run whose process has ended, the worker whose
    log says it submitted the run and did not abort. A worker logs "submitting flow run" before
    it asks the server for the run, so two workers racing for one run both log it, and the
    loser's "Aborted submission" comes after (CI took the first log, killed the night's own
    worker, and the night never ended)."""
    workers = {w.pid: w for w in d.workers}
    pid = int(str(run.infrastructure_pid or 0).rsplit(":", 1)[-1])
    while pid > 1:
        if pid in workers:
            return workers[pid]
        pid = _ppid(pid)
    for w in d.workers:
        name = w.args[w.args.index("--name") + 1]
        log = (d.home / f"{name}.log").read_text(errors="replace")
        if (
            f"submitting flow run '{run.id}'" in log
            and f"submission of flow run '{run.id}'" not in log
        ):
            return w
    return None


@pytest.fixture
def pg_config(deployed: Deployed) -> Iterator[Path]:
    """The lab's config with its store in a PostgreSQL schema of its own (dropped afterwards)."""
    import uuid

    import yaml
    from sqlalchemy import create_engine, make_url, text

    base = make_url(os.environ[PG_ENV])
    schema = f"hvmove_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    doc = yaml.safe_load((deployed.lab.dir / "hvmove.yaml").read_text())
    doc["store"] = {"url": url.render_as_string(hide_password=False)}
    path = deployed.lab.dir / "hvmove-pg.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        yield path
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set (.ci/postgres.sh)")
# three nights, two workers and a lost one: its own waits are bounded (180 s and 300 s), so the
# suite-wide 300 s limit must not cut the last wait short (it did, on a 2-core CI run)
@pytest.mark.timeout(900)
def test_two_workers_share_a_night_and_a_lost_worker_is_resumed(
    deployed: Deployed, pg_config: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.states import Crashed

    from hvmove.config import load

    lab = deployed.lab
    lab.server.control("settings", {"rate_scale": 1})  # copies last long enough to lose a worker
    deployed.workers.append(start_worker(deployed.api, deployed.home, "w2"))
    calls_before = len(lab.server.scripts.calls)  # earlier tests of the module moved VMs too
    plan = lab.dir / "three.yaml"
    plan.write_text(
        "moves:\n  - {host: hv01, vm: sql01, destination: 'F:\\VMs\\sql01'}\n"
        "  - {host: hv01, vm: app01, destination: 'F:\\VMs\\app01'}\n"
        "  - {host: hv02, vm: dc01, destination: 'E:\\VMs\\dc01'}\n"
    )
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        while (
            len(
                [
                    w
                    for w in client.read_workers_for_work_pool("hvmove")
                    if w.status == WorkerStatus.ONLINE
                ]
            )
            < 2
        ):
            assert time.monotonic() < deadline, worker_logs(deployed)
            time.sleep(0.5)
        nightly = client.read_deployment_by_name("nightly-migrations/nightly")

        def night(config: Path):
            return client.create_flow_run_from_deployment(
                nightly.id,
                parameters={
                    "window": "now",
                    "poll_seconds": 0.5,
                    "plan": str(plan),
                    "config": str(config),
                },
            )

        # a SQLite store with two workers online is refused, with the reason
        refused = wait_final(night(lab.dir / "hvmove.yaml").id)
        assert refused.state.is_failed() and "SQLite" in refused.state.message
        assert "2 workers online" in refused.state.message
        assert all(r.vm_name != "app01" for r in Store(lab.config.store_url()).moves())
        first = night(pg_config)
        ids = {vm: lab.vm(vm).id for vm in ("sql01", "app01", "dc01")}
        deadline = time.monotonic() + 180
        while not all(
            any(j.percent >= 3 for j in lab.server.engine.jobs_of(i)) for i in ids.values()
        ):
            assert time.monotonic() < deadline, worker_logs(deployed)
            time.sleep(0.2)
        while True:  # a worker records a run's process id just after it started it
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[first.id])
                )
            )
            if len(children) == 3 and all(c.infrastructure_pid for c in children):
                break
            assert time.monotonic() < deadline, children
            time.sleep(0.2)
        by_worker = {c.id: _worker_of(c, deployed) for c in children}
        used = {w.pid for w in by_worker.values() if w is not None}
        assert len(used) == 2, by_worker  # the night's moves ran on both workers
        night_worker = _worker_of(client.read_flow_run(first.id), deployed)
        # every run's worker known: one left out would be killed without being marked lost
        assert night_worker is not None and None not in by_worker.values(), by_worker
        lost = next(w for w in deployed.workers if w.pid in used and w is not night_worker)
        orphans = [c for c in children if by_worker[c.id] is lost]
        for pid in _tree(lost.pid):  # the machine dies: its worker and its moves' processes
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        lost.wait(10)
        lab.server.control("settings", {"rate_scale": 40})  # the rest need not be slow
        for c in orphans:  # what a zombie-run automation does once the heartbeats stop
            client.set_flow_run_state(c.id, Crashed(message="worker lost"), force=True)
        wait_final(first.id, timeout=300)
        store = Store(load(pg_config).store_url())
        lost_vms = {c.parameters["vm"] for c in orphans}
        # the lost worker's moves stay open in the shared store (one may have ended first)
        left = {r.vm_name for r in store.moves() if r.status == "running"}
        assert left and left <= lost_vms, (left, lost_vms)
        second = wait_final(night(pg_config).id, timeout=300)
    assert second.state.is_completed(), (second.state, worker_logs(deployed))
    records = {r.vm_name: r for r in store.moves()}
    assert all(records[vm].status == "completed" for vm in ids), records
    for vm, vm_id in ids.items():  # resumed by attaching or finishing: never a second start
        starts = [
            c
            for c in lab.server.scripts.calls[calls_before:]
            if c[1] == "Start-StorageMove" and c[2].get("VmId") == vm_id
        ]
        assert len(starts) == 1, (vm, starts)
