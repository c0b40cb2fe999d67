"""What an operator sees in the Prefect UI after a night of moves, as screenshots, and a browser
check: it fails when a page shows an error (or not the run it should) instead of the run.

    .venv/bin/python tools/ui_screenshots.py [--out docs/screenshots]

It starts a private Prefect server and the demo's lab estate, runs the demo plan as a night
(the nightly-migrations flow, in this process), moves one more VM with `cleanup: approve`,
deploys cleanup-approval and lets a process worker run it until it suspends with its form. Then
it opens the UI in headless Chromium (Debian's `chromium`; `apt-get install chromium`) through
the DevTools protocol and saves: the runs list, one move (graph and logs, then its artifacts),
the night's report and the approval form. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# what a page shows instead of the run when something is wrong
# (not a bare "404": run and artifact ids on the page may contain it)
ERRORS = ("Something went wrong", "Page not found", "Failed to fetch", "Error loading")


class PageError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium driven over the DevTools protocol (no driver, no extra package)."""

    def __init__(self, exe: str, width: int = 1440, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="hvmove-chromium-")
        port = _free_port()
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={port}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start")
            time.sleep(0.3)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return out.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def open(self, url: str, expect: list[str], timeout: float = 45) -> str:
        """Go to URL and wait until the page shows every EXPECT text; an error page (or a page
        that never shows them) raises PageError with what it showed."""
        self.call("Page.navigate", url=url)
        return self.wait_for(expect, url, timeout)

    def wait_for(self, expect: list[str], where: str, timeout: float = 45) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            bad = [e for e in ERRORS if e in text]
            if bad:
                raise PageError(f"{where} shows an error ({bad[0]!r}): {text[:500]!r}")
            if all(e in text for e in expect):
                time.sleep(1.5)  # let charts and the graph finish drawing
                return text
            if time.monotonic() > deadline:
                missing = [e for e in expect if e not in text]
                raise PageError(f"{where} never showed {missing}: {text[:500]!r}")
            time.sleep(0.5)

    def click(self, label: str) -> None:
        # the UI's tabs and buttons are not always <button>s: click the innermost element
        # showing exactly LABEL, or the button around it
        found = self.js(
            "(() => { const e = [...document.querySelectorAll('body *')].filter(e =>"
            " [...e.childNodes].some(n => n.nodeType === 3 &&"
            f" n.textContent.trim() === {json.dumps(label)}));"
            " if (!e.length) return false;"
            " (e[0].closest('button, a, [role=tab]') || e[0]).click(); return true })()"
        )
        if not found:
            raise PageError(f"no button {label!r} on the page: {self.text()[:300]!r}")

    def shot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def estate(work: Path) -> Iterator[dict[str, Any]]:
    """A private Prefect server, the demo lab, a night, a move awaiting cleanup approval and a
    suspended cleanup-approval run (worker stopped afterwards)."""
    from hvmove.prefect_local import ensure_server

    # a server of its own, never the user's: no API in the environment, no profile to read
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_HOME"] = str(work / "client")
    found = ensure_server(home=work / "prefect", port=_free_port())
    # imported only once the environment names that server, so nothing they load sees another
    from hvmove.lab.demo import build_demo
    from hvmove.lab.process import write_config
    from hvmove.lab.server import LabServer

    lab_dir = work / "lab"
    build_demo(lab_dir)
    server = LabServer(lab_dir).start()
    worker = None
    try:
        config = write_config(lab_dir)
        night, plan, approve = _run_moves(lab_dir, config)
        env = {**os.environ, "PREFECT_API_URL": found.url}
        run = _approval_run(env, approve, plan)
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool",
             "hvmove", "--run-once"],
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, cwd=work,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        yield {"ui": found.ui, **_once_suspended(run, night)}
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        server.stop()
        pid = json.loads((work / "prefect" / "server.json").read_text()).get("pid")
        with contextlib.suppress(Exception):
            os.killpg(pid, signal.SIGTERM)


def _run_moves(lab_dir: Path, config: Path) -> tuple[Any, Path, Path]:
    """The demo's moves as a night, but one: that one moved with `cleanup: approve`, so that the
    approval form has a move to show. Returns the night's state and the two files."""
    import yaml

    from flows.migrate_vm import migrate_vm
    from flows.nightly import nightly
    from hvmove.lab.demo import DEMO_MOVES

    held = "file01"
    plan = lab_dir / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "moves": [
                    {"host": h, "vm": vm, "destination": d}
                    for vm, h, d, _ in DEMO_MOVES
                    if vm != held
                ]
            }
        )
    )
    night = nightly(plan=str(plan), config=str(config), window="now", return_state=True)
    approve = lab_dir / "approve.yaml"
    approve.write_text(config.read_text() + "cleanup: approve\n")
    host, dest = next((h, d) for vm, h, d, _ in DEMO_MOVES if vm == held)
    migrate_vm(host=host, vm=held, destination=dest, config=str(approve), return_state=True)
    return night, plan, approve


def _approval_run(env: dict[str, str], approve: Path, plan: Path) -> Any:
    """Deploy (as `hvmove deploy` does) and create a run of the cleanup-approval deployment."""
    from prefect.client.orchestration import get_client

    subprocess.run(
        [sys.executable, "-m", "hvmove.cli", "deploy", "--config", str(approve), "--plan",
         str(plan)],
        env=env, check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("cleanup-approval/cleanup-approval")
        return client.create_flow_run_from_deployment(dep.id)


def _once_suspended(run: Any, night: Any) -> dict[str, Any]:
    """Wait for the approval run to suspend (its form is then there), and find the runs shown."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while not client.read_flow_run(run.id).state.is_paused():
            if time.monotonic() > deadline:
                raise RuntimeError("the cleanup-approval run did not suspend")
            time.sleep(1)
        night_run = client.read_flow_run(night.state_details.flow_run_id)
        moves = client.read_flow_runs()
    move = next(r for r in moves if r.name.startswith("move web01"))
    return {"night": night_run, "move": move, "approval": run}


def take(b: Browser, s: dict[str, Any], out: Path) -> list[Path]:
    ui, night, move, approval = s["ui"], s["night"], s["move"], s["approval"]
    shots = []
    b.open(f"{ui}/runs", [night.name, move.name])
    shots.append(b.shot(out / "runs-list.png"))
    b.open(f"{ui}/runs/flow-run/{move.id}", [move.name, "host:hv01", "prechecks-web01"])
    shots.append(b.shot(out / "move-graph-logs.png"))
    b.click("Artifacts")
    b.wait_for(["move-report"], "the move's artifacts")
    shots.append(b.shot(out / "move-artifacts.png"))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        report = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-report"]))
        )[0]
    b.open(f"{ui}/artifacts/artifact/{report.id}", ["Night", "Moved", "web01"])
    shots.append(b.shot(out / "night-report.png"))
    b.open(f"{ui}/runs/flow-run/{approval.id}", [approval.name, "Suspended"])
    b.click("Resume")
    b.wait_for(["Approve all verified", "file01 on hv02"], "the approval form")
    shots.append(b.shot(out / "approval-form.png"))
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        print("needs Chromium: apt-get install chromium (or --chromium PATH)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = Path(tempfile.mkdtemp(prefix="hvmove-shots-"))
    try:
        with estate(work) as s:
            b = Browser(args.chromium)
            try:
                take(b, s, args.out)
            except PageError as exc:
                print(f"browser check failed: {exc}", file=sys.stderr)
                return 1
            finally:
                b.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
