"""Start and stop a lab in the background, and write the hvmove.yaml that points at it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import yaml

from hvmove.errors import HvmoveError
from hvmove.lab.build import build_default
from hvmove.lab.control import LabControl
from hvmove.lab.estate import Estate, ntlm_domain


class LabError(HvmoveError):
    pass


def _pid(lab_dir: Path) -> int | None:
    try:
        pid = int((lab_dir / "lab.pid").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def is_running(lab_dir: Path) -> bool:
    return _pid(lab_dir) is not None


def write_config(lab_dir: Path) -> Path:
    estate = Estate.load(lab_dir)
    https = estate.settings.https
    hosts = []
    for h in estate.data.hosts:
        entry: dict[str, object] = {
            "name": h.name,
            "address": "127.0.0.1",
            "port": h.port,
            "transport": "https" if https else "http",
            "auth": estate.settings.auth,
            "username": (
                f"{ntlm_domain(lab_dir)}\\{estate.settings.username}"
                if estate.settings.auth == "negotiate"
                else estate.settings.username
            ),
            "password": {"env": "HVMOVE_LAB_PASSWORD"},
        }
        if https:
            # a host with its own certificate (lab fault tls_name) is trusted through that one
            entry["ca_file"] = f"tls/{h.name}-cert.pem" if h.tls_name else "tls/lab-cert.pem"
        elif estate.settings.auth == "basic":
            entry["insecure"] = True  # Basic over HTTP sends the password in clear
        shares = [
            v.root.rstrip("\\")
            for v in estate.data.volumes
            if v.kind == "smb" and h.name.lower() in (x.lower() for x in v.hosts)
        ]
        if shares:
            entry["shares"] = shares  # what `hvmove doctor` checks the host can reach
        hosts.append(entry)
    doc = {"hosts": hosts, "store": {"url": "sqlite:///hvmove.db"}, "lab": {"dir": "."}}
    path = lab_dir / "hvmove.yaml"
    header = (
        "# Written by `hvmove lab up`: the lab's hosts, reached over WinRM on 127.0.0.1.\n"
        "# The password is read from HVMOVE_LAB_PASSWORD (environment, or .env beside this"
        " file).\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def up(
    lab_dir: Path,
    *,
    hosts: int = 2,
    vms: int = 6,
    https: bool = True,
    auth: Literal["negotiate", "basic"] = "negotiate",
    timeout: float = 60.0,
) -> dict[str, int]:
    """Start the lab (building the estate on first use) and return once every host answers."""
    lab_dir = lab_dir.resolve()
    if not (lab_dir / "estate.json").exists():
        estate = build_default(lab_dir, hosts=hosts, vms=vms)
        estate.settings.https = https
        estate.settings.auth = auth
        estate.save()
    if not is_running(lab_dir):
        log = open(lab_dir / "lab.log", "ab")  # noqa: SIM115 - handed to the child process
        subprocess.Popen(
            [sys.executable, "-m", "hvmove.lab.server", str(lab_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=lab_dir,
        )
        log.close()
    ports = _wait_ready(lab_dir, timeout)
    write_config(lab_dir)
    _check_winrm(lab_dir)
    return ports


def _wait_ready(lab_dir: Path, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if (lab_dir / "estate.json").exists():
            try:
                estate = Estate.load(lab_dir)
                if all(h.port for h in estate.data.hosts):
                    reply = LabControl(lab_dir).call("ping", timeout=2)
                    return {str(k): int(v) for k, v in reply["hosts"].items()}
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    tail = ""
    log = lab_dir / "lab.log"
    if log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise LabError(f"lab in {lab_dir} did not answer within {timeout:.0f} s ({last}); log: {tail}")


def _check_winrm(lab_dir: Path) -> None:
    """The real readiness test: each host answers a project script over pypsrp."""
    from hvmove.config import load
    from hvmove.hyperv.client import open_client
    from hvmove.hyperv.errors import ScriptError

    config = load(lab_dir / "hvmove.yaml")
    faulted = {h.name for h in Estate.load(lab_dir).data.hosts if h.tls_name}
    for host in config.hosts:
        if host.name in faulted:
            continue  # serves a certificate for another name on purpose (`hvmove doctor` shows it)
        # it answered: a refusal (e.g. the lab fault "rights": "none") is an answer
        with open_client(config, host.name) as client, contextlib.suppress(ScriptError):
            client.host_facts()


def down(lab_dir: Path, timeout: float = 15.0) -> bool:
    pid = _pid(lab_dir.resolve())
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (lab_dir / "lab.pid").unlink(missing_ok=True)
    return True
