"""Drive a running lab from another process: faults, reboots, guest checks (lab only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from hvmove.credentials import read_env_file
from hvmove.lab.estate import Estate


class LabControl:
    def __init__(self, lab_dir: Path) -> None:
        self.dir = lab_dir
        estate = Estate.load(lab_dir)
        self.hosts = {h.name: h.port for h in estate.data.hosts}
        self.https = estate.settings.https
        self.username = estate.settings.username
        self.password = read_env_file(lab_dir / ".env").get("HVMOVE_LAB_PASSWORD", "")

    def call(self, command: str, timeout: float = 10.0, **body: Any) -> dict[str, Any]:
        port = next(iter(self.hosts.values()))
        scheme = "https" if self.https else "http"
        session = requests.Session()
        session.trust_env = False  # the lab is on 127.0.0.1: never through a proxy
        reply = session.post(
            f"{scheme}://127.0.0.1:{port}/lab/{command}",
            json=body,
            auth=(self.username, self.password),
            verify=str(self.dir / "tls" / "lab-cert.pem") if self.https else False,
            timeout=timeout,
        )
        if reply.status_code == 400:
            raise ValueError(reply.text)
        reply.raise_for_status()
        return reply.json()
