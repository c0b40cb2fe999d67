"""Shared fixtures: a lab served in-process, reached through the real pypsrp client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

GiB = 1024**3


@dataclass
class Lab:
    dir: Path
    server: object  # hvmove.lab.server.LabServer
    config: object  # hvmove.config.Config

    def client(self, host: str = "hv01"):
        from hvmove.hyperv.client import open_client

        return open_client(self.config, host)

    def vm(self, name: str):
        return next(vm for vm in self.server.estate.data.vms if vm.name == name)


def make_lab(
    tmp: Path,
    *,
    https: bool = False,
    max_moves: int = 2,
    rate_scale: float = 40.0,
    populate=None,
    auth: str = "negotiate",
    refusals: bool = True,
) -> Lab:
    from hvmove.config import load
    from hvmove.lab.build import add_vm, new_estate
    from hvmove.lab.estate import LabSettings
    from hvmove.lab.process import write_config
    from hvmove.lab.server import LabServer

    # a coarse size scale keeps the real files small: 40 GiB is 640 KiB on disk
    estate = new_estate(
        tmp,
        hosts=2,
        settings=LabSettings(
            size_scale=65536,
            rate_scale=rate_scale,
            https=https,
            auth=auth,
            script_refusals=refusals,  # off: tests prove hvmove's guards, not the scripts'
        ),
    )
    for h in estate.data.hosts:
        h.maximum_storage_migrations = max_moves
    if populate is None:
        add_vm(estate, "hv01", "web01", disks=[(40 * GiB, 0.5, "Dynamic")])
        add_vm(estate, "hv01", "sql01", disks=[(60 * GiB, 1, "Fixed"), (20 * GiB, 0.4, "Dynamic")])
        add_vm(estate, "hv01", "app01", state="Off", checkpoints=2)
        add_vm(estate, "hv01", "iso01", dvd=["D:\\ISO\\setup.iso"])
        add_vm(estate, "hv02", "dc01", disks=[(20 * GiB, 0.5, "Dynamic")])
    else:
        populate(estate)
    estate.save()
    server = LabServer(tmp).start()
    write_config(tmp)
    return Lab(dir=tmp, server=server, config=load(tmp / "hvmove.yaml"))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(tmp_path)
    yield lab
    lab.server.stop()


@pytest.fixture
def client(lab: Lab):
    c = lab.client("hv01")
    yield c
    c.close()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on a free port for this session (what the UI reads), used
    by the flow tests only: it costs 15-20 s on a fresh database."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    home = tmp_path_factory.mktemp("prefect-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((home / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    else:
        raise RuntimeError("prefect server did not start")
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    os.environ["PREFECT_API_URL"] = url  # for subprocesses
    with temporary_settings(
        {PREFECT_API_URL: url, PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}
    ):
        yield url
        # ship the logs still queued while the server is up, or the exit handler reports
        # "Error logging to API" once it is gone
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
    os.environ.pop("PREFECT_API_URL", None)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
