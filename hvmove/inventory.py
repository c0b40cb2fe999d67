"""Collect hosts, volumes and VMs from every configured host, concurrently."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from hvmove import models
from hvmove.config import Config
from hvmove.errors import HvmoveError
from hvmove.hyperv.client import HostClient, open_client


class HostInventory(BaseModel):
    name: str
    facts: models.HostFacts | None = None
    volumes: list[models.VolumeInfo] = []
    vms: list[models.VMInfo] = []
    error: str | None = None


def collect_host(client: HostClient) -> HostInventory:
    facts = client.host_facts()
    inv = client.inventory()
    # every volume of the host (empty -Path), plus the volumes (SMB shares) its VMs live on
    paths = sorted(
        {vm.configuration_location for vm in inv.vms}
        | {d.path for vm in inv.vms for d in vm.drives if d.path and d.disk_number is None}
    )
    seen: dict[str, models.VolumeInfo] = {}
    found = client.volumes([], partial=True).volumes
    found += client.volumes(paths, partial=True).volumes if paths else []
    # a path the host cannot resolve (a share without delegation) costs its own entry only
    for vol in found:
        if not vol.error:
            seen.setdefault(vol.volume.lower(), vol)
    return HostInventory(name=client.name, facts=facts, volumes=list(seen.values()), vms=inv.vms)


def collect(
    config: Config,
    hosts: list[str] | None = None,
    connect: Callable[[Config, str], HostClient] = open_client,
) -> list[HostInventory]:
    names = hosts or [h.name for h in config.hosts]

    def one(name: str) -> HostInventory:
        try:
            with connect(config, name) as client:
                return collect_host(client)
        except HvmoveError as exc:
            return HostInventory(name=name, error=str(exc))

    with ThreadPoolExecutor(max_workers=min(16, len(names)) or 1) as pool:
        return list(pool.map(one, names))
