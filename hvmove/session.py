"""Opening one move: the host's session, the request checked like a plan entry, and the store's
record to resume or start. The migrate-vm flow runs its steps inside this; flows never open host
clients themselves (the library owns the connection and its credentials)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hvmove.config import Config
from hvmove.hyperv.client import HostClient, open_client
from hvmove.layout import norm
from hvmove.models import MoveRequest
from hvmove.plans import Plan, resolve
from hvmove.store import MoveRecord, Store


@dataclass
class MoveSession:
    """One move, ready for its steps: the open host client and the request as resolved against
    the host's inventory (the VM's id known), with the store record it writes to."""

    client: HostClient
    request: MoveRequest
    vm_id: str
    record: MoveRecord

    @property
    def host(self) -> str:
        return self.client.name

    @property
    def move_id(self) -> str:
        return self.record.id

    @property
    def resumed(self) -> bool:
        """An earlier run of this move reached a step or started a job: this run resumes it."""
        return self.record.last_step is not None or self.record.job_id is not None


@contextmanager
def move_session(
    cfg: Config,
    store: Store,
    request: MoveRequest,
    *,
    batch: str | None = None,
    flow_run_id: str | None = None,
) -> Iterator[MoveSession]:
    """Open the host, check the request, and open (or find the unfinished) record of the move.
    A bad request raises PlanError with the CLI's one-line message, before anything changes."""
    with open_client(cfg, request.host) as client:
        # the same checks, and the same one-line error, as a plan entry given to the CLI
        known = {(r.vm_id.lower(), norm(r.destination)) for r in store.moves()}
        (move,) = resolve(
            Plan(moves=[request]),
            cfg,
            {client.name: client.inventory().vms},
            "migrate-vm parameters",
            known,
        )
        record = store.open_move(
            host=client.name,
            vm_id=move.vm.id,
            vm_name=move.request.vm,
            request=move.request.model_dump(mode="json"),
            batch=batch,
        )
        store.update(record.id, flow_run_id=flow_run_id)
        yield MoveSession(client=client, request=move.request, vm_id=move.vm.id, record=record)


class HostClients:
    """One client per host, opened when first asked for and all closed together: for a flow that
    visits the hosts of several moves (the cleanup approval)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._open: dict[str, HostClient] = {}

    def get(self, host: str) -> HostClient:
        client = self._open.get(host)
        if client is None:
            client = self._open[host] = open_client(self.cfg, host)
        return client

    def close(self) -> None:
        for c in self._open.values():
            c.close()
        self._open.clear()

    def __enter__(self) -> HostClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
