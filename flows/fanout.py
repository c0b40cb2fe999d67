"""How the night starts its moves, the two ways Prefect supports:

- ``InProcess`` (the CLI, a deployed night without a migrate-vm deployment): each move is a
  migrate-vm subflow called from a task on the night's thread pool. A subflow called from a task
  gets a unique (UUID) key, so moves never share a tracking task run.
- ``Deployed``: each move is a run of the ``migrate-vm`` deployment (``run_deployment``), picked
  up by any worker of its pool: moves spread over workers, each is its own process that a cancel
  reaches, and each can be retried or cancelled on its own in the UI. They are linked to the
  night as subflows, so cancelling the night cancels them too.

Either way the store says how each move ended; the handle only says when."""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkerStatus
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError

from hvmove.config import Config
from hvmove.errors import ConfigError


class Handle(Protocol):
    def done(self) -> bool: ...
    def message(self) -> str: ...


class Launcher(Protocol):
    def start(self, params: dict[str, Any]) -> Handle: ...


def api_unavailable(task: Any, task_run: Any, state: Any) -> bool:
    """A move whose run could not even be created or recorded: the Prefect API answered 5xx
    (a busy server's SQLite answers 503) or could not be reached. Retried, because running
    migrate-vm again is safe by design: it resumes from the store and each step looks at the
    host before it acts. Anything else (the move's own failure) is not retried."""
    exc = state.data
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


@task(
    name="move",
    task_run_name="move-{params[vm]}-on-{params[host]}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=api_unavailable,
)
def move_task(params: dict[str, Any]) -> str:
    from flows.migrate_vm import migrate_vm

    state = migrate_vm(**params, return_state=True)
    return f"{state.name}: {state.message or ''}"


class _Future:
    def __init__(self, future: Any) -> None:
        self.future = future

    def done(self) -> bool:
        return self.future.state.is_final()

    def message(self) -> str:
        state = self.future.state
        if state.is_completed():
            return str(self.future.result())
        return state.message or state.name


class InProcess:
    def start(self, params: dict[str, Any]) -> Handle:
        return _Future(move_task.submit(params))


class _Run:
    def __init__(self, flow_run_id: Any) -> None:
        self.id = flow_run_id
        self.state: Any = None
        self.read = 0.0

    def done(self) -> bool:
        if self.state is None or time.monotonic() - self.read >= 1.0:  # one API call a second
            with get_client(sync_client=True) as client:
                self.state = client.read_flow_run(self.id).state
            self.read = time.monotonic()
        return bool(self.state and self.state.is_final())

    def message(self) -> str:
        return f"{self.state.name}: {self.state.message or ''}" if self.state else ""


class Deployed:
    def __init__(self, deployment: str, cfg: Config) -> None:
        self.deployment = deployment
        with get_client(sync_client=True) as client:
            try:
                found = client.read_deployment_by_name(deployment)
            except Exception:
                raise ConfigError(
                    f"move_deployment {deployment!r}: no such deployment on the Prefect server; "
                    "deploy deployments/prefect.yaml (it holds migrate-vm), or leave "
                    "move_deployment empty to run the moves inside the night's process"
                ) from None
            pool = found.work_pool_name
            workers = client.read_workers_for_work_pool(pool) if pool else []
        online = [w for w in workers if w.status == WorkerStatus.ONLINE]
        refuse_sqlite_with_workers(cfg, pool or "?", len(online))

    def start(self, params: dict[str, Any]) -> Handle:
        run = run_deployment(self.deployment, parameters=params, timeout=0, as_subflow=True)
        return _Run(run.id)


def refuse_sqlite_with_workers(cfg: Config, pool: str, workers: int) -> None:
    """A SQLite store is a file on one machine: moves run by several workers would each write
    their own, and a resumed move would not find its record (its job, its 'before' picture)."""
    url = cfg.store_url()
    if url.startswith("sqlite") and workers > 1:
        raise ConfigError(
            f"{cfg.path}: store.url is SQLite ({url}) but work pool {pool!r} has {workers} "
            "workers online; moves on different workers would keep separate records and a "
            "resumed move could start a second copy. Give store.url a PostgreSQL URL "
            "(postgresql+psycopg://...) shared by every worker, or run one worker"
        )


def launcher(move_deployment: str | None, cfg: Config) -> Launcher:
    return Deployed(move_deployment, cfg) if move_deployment else InProcess()
