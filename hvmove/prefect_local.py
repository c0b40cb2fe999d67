"""Which Prefect API hvmove's runs go to: the one the user's Prefect settings name (environment,
active profile from `prefect config set` or `prefect cloud login`, `.env`, `prefect.toml`), else
a local server hvmove starts in the background once and reuses, so every run can be watched in
the UI. The settings are resolved by Prefect itself, in a child process: this module does not
import Prefect (the library must not), and Prefect reads its settings once, at first import."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hvmove.errors import HvmoveError

DEFAULT_HOME = Path(os.environ.get("HVMOVE_HOME", Path.home() / ".hvmove")) / "prefect"
QUIET = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

_RESOLVE = """
import json
from prefect.settings import get_current_settings
from prefect.settings.profiles import load_current_profile
s = get_current_settings()
print(json.dumps({"api_url": s.api.url, "ui_url": s.ui_url, "profile": load_current_profile().name,
                  "key": bool(s.api.key)}))
"""


class PrefectServerError(HvmoveError):
    pass


@dataclass(frozen=True)
class Api:
    url: str
    ui: str
    source: str  # where the URL came from, for the line hvmove prints

    def describe(self) -> str:
        return f"Prefect API {self.url} ({self.source}); UI {self.ui}"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    return _status(api_url.rstrip("/") + "/health", timeout) == 200


def _status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def configured(cwd: Path | None = None) -> Api | None:
    """The API the user's Prefect settings name, resolved by Prefect; None when none is set."""
    env = {**os.environ, **{k: v for k, v in QUIET.items() if k not in os.environ}}
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise PrefectServerError(
            "cannot read the Prefect settings: " + (done.stderr.strip().splitlines() or ["?"])[-1]
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if not found.get("api_url"):
        return None
    if os.environ.get("PREFECT_API_URL"):
        source = "from PREFECT_API_URL in the environment"
    elif found.get("key"):
        source = f"Prefect Cloud, profile {found['profile']!r}"
    else:
        source = f"from your Prefect settings: profile {found['profile']!r}, .env or prefect.toml"
    url = str(found["api_url"])
    return Api(url, str(found.get("ui_url") or ui_url(url)), source)


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise PrefectServerError("no free local port for the Prefect server")


def _prefect_exe() -> Path:
    # beside this interpreter: `prefect` on POSIX, Scripts\\prefect.exe on Windows
    here = Path(sys.executable).parent
    for name in ("prefect", "prefect.exe"):
        if (here / name).exists():
            return here / name
    raise PrefectServerError(f"no prefect executable beside {sys.executable}; install hvmove")


def _still_good(state: dict[str, object]) -> bool:
    """Our earlier server is reused only when its installation is still there, its API is
    healthy and its UI answers (a server whose install was deleted keeps its API up for a while
    and answers the UI with 500)."""
    url = str(state.get("api_url") or "")
    exe = Path(str(state.get("prefect") or ""))
    return bool(url) and exe.exists() and healthy(url) and _status(ui_url(url) + "/") == 200


def _stop(state: dict[str, object]) -> None:
    """Stop the server hvmove started earlier (its own process group), if it still runs."""
    pid = state.get("pid")
    if not isinstance(pid, int):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def ensure_server(home: Path = DEFAULT_HOME, port: int = 4200, timeout: float = 120.0) -> Api:
    """The configured API, or a local server of hvmove's own. Sets PREFECT_API_URL in this
    process's environment so that Prefect, imported later, uses it."""
    os.environ.update({k: v for k, v in QUIET.items() if k not in os.environ})
    found = configured()
    if found is not None:
        os.environ["PREFECT_API_URL"] = found.url
        return found
    home.mkdir(parents=True, exist_ok=True)
    state_file = home / "server.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if _still_good(state):
            os.environ["PREFECT_API_URL"] = str(state["api_url"])
            return _local(str(state["api_url"]), "reused")
        _stop(state)
    url = _start(home, _free_port(port), timeout)
    os.environ["PREFECT_API_URL"] = url
    return _local(url, "started")


def _local(url: str, how: str) -> Api:
    return Api(
        url, ui_url(url), f"no API configured in Prefect's settings: hvmove's local server, {how}"
    )


def _start(home: Path, port: int, timeout: float) -> str:
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **QUIET,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    prefect = _prefect_exe()
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
    state = {"api_url": url, "pid": proc.pid, "prefect": str(prefect)}
    (home / "server.json").write_text(json.dumps(state))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrefectServerError(f"the Prefect server exited; see {home / 'server.log'}")
        if healthy(url):
            return url
        time.sleep(0.5)
    raise PrefectServerError(
        f"the Prefect server did not answer within {timeout:.0f} s; see {home / 'server.log'}"
    )


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")
