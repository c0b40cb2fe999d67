"""A local Prefect server for when none is configured: started in the background once, then
reused, so every run can be watched in the UI. Talks to it over HTTP only (no Prefect import:
the settings must be in the environment before Prefect is first imported)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hvmove.errors import HvmoveError

DEFAULT_HOME = Path(os.environ.get("HVMOVE_HOME", Path.home() / ".hvmove")) / "prefect"
QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


class PrefectServerError(HvmoveError):
    pass


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise PrefectServerError("no free local port for the Prefect server")


def ensure_server(home: Path = DEFAULT_HOME, port: int = 4200, timeout: float = 120.0) -> str:
    """PREFECT_API_URL if it is set (or one we started before), else start a server. Sets the
    environment of this process so that Prefect, imported later, uses it."""
    os.environ.update({k: v for k, v in QUIET.items() if k not in os.environ})
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home.mkdir(parents=True, exist_ok=True)
    state = home / "server.json"
    if state.exists():
        url = json.loads(state.read_text()).get("api_url", "")
        if url and healthy(url):
            os.environ["PREFECT_API_URL"] = url
            return url
    port = _free_port(port)
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **QUIET,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    log = open(home / "server.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    log.close()
    state.write_text(json.dumps({"api_url": url, "pid": proc.pid}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrefectServerError(f"the Prefect server exited; see {home / 'server.log'}")
        if healthy(url):
            os.environ["PREFECT_API_URL"] = url
            return url
        time.sleep(0.5)
    raise PrefectServerError(
        f"the Prefect server did not answer within {timeout:.0f} s; see {home / 'server.log'}"
    )


def ui_url(api_url: str) -> str:
    return api_url.removesuffix("/api").removesuffix("/api/")
