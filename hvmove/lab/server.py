"""The lab process: one WS-Management endpoint serving every lab host, the move engine, guests.

Run in the foreground with ``python -m hvmove.lab.server LAB_DIR`` (``hvmove lab up`` starts it in
the background). Killing and restarting this process is a reboot of every lab host: running moves
end without cleanup, the estate comes back from ``estate.json``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hvmove.credentials import read_env_file
from hvmove.lab.engine import Engine
from hvmove.lab.estate import Estate, ntlm_domain
from hvmove.lab.scripts import LabScripts
from hvmove.lab.tls import make_self_signed
from hvmove.lab.wsman import Invocation, WSManEndpoint

log = logging.getLogger("hvmove.lab")


class LabServer:
    def __init__(self, lab_dir: Path, *, https: bool | None = None) -> None:
        self.dir = lab_dir.resolve()
        self.estate = Estate.load(self.dir)
        if https is not None:
            self.estate.settings.https = https
        self.engine = Engine(self.estate)
        self.engine.on_reboot = self.reboot  # type: ignore[method-assign]
        self.scripts = LabScripts(self.estate, self.engine)
        self.password = read_env_file(self.dir / ".env").get("HVMOVE_LAB_PASSWORD", "")
        if not self.password:
            raise RuntimeError(f"{self.dir / '.env'}: HVMOVE_LAB_PASSWORD missing")
        tls = make_self_signed(self.dir / "tls") if self.estate.settings.https else None
        self.endpoint = WSManEndpoint(
            self._dispatch,
            username=self.estate.settings.username,
            password=self.password,
            tls=tls,
            control=self.control,
            ntlm_domain=ntlm_domain(self.dir),
        )
        # through self.scripts at call time, like _dispatch
        self.endpoint.on_shell_closed = lambda host, shell: self.scripts.shell_closed(host, shell)
        self.stopped = threading.Event()
        self.reboots = 0

    def _dispatch(self, inv: Invocation) -> str:
        # through self.scripts at call time: a reboot swaps the engine and the scripts
        return self.scripts.dispatch(inv)

    def start(self) -> LabServer:
        for host in self.estate.data.hosts:
            host.port = self.endpoint.add_host(host.name, host.port)
            if host.tls_name and self.estate.settings.https:
                # the "wrong certificate name" fault: a certificate for another name
                cert, key = make_self_signed(
                    self.dir / "tls", dns_name=host.tls_name, stem=f"{host.name}"
                )
                self.endpoint.set_host_certificate(host.name, cert, key)
        self.estate.save()
        self.engine.start_guests()
        return self

    def stop(self) -> None:
        self.engine.shutdown()
        self.endpoint.stop()
        self.stopped.set()

    def reboot(self, host: str | None = None, downtime_s: float = 1.0) -> None:
        """Every lab host goes down: connections cut, moves end uncleaned, state read again."""
        names = [h.name for h in self.estate.data.hosts]
        for name in names:
            self.endpoint.kill_host(name)
        self.engine.shutdown()
        time.sleep(downtime_s)
        self.estate = Estate.load(self.dir)
        self.engine = Engine(self.estate)
        self.engine.on_reboot = self.reboot  # type: ignore[method-assign]
        self.scripts = LabScripts(self.estate, self.engine)
        for name in names:
            self.endpoint.revive_host(name)
        self.engine.start_guests()
        self.reboots += 1

    # -- control route: /lab/<command> -----------------------------------------------------------
    def control(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        if command == "ping":
            return {
                "ok": True,
                "hosts": {h.name: h.port for h in self.estate.data.hosts},
                "reboots": self.reboots,
                "pid": os.getpid(),
            }
        if command == "fault":
            self.endpoint.faults.add(**body)
            return {"ok": True}
        if command == "clear_faults":
            self.endpoint.faults.clear()
            self.engine.faults.clear()
            return {"ok": True}
        if command == "script_delay":
            if str(body.get("script")) not in self.scripts.handlers:
                raise ValueError(f"no script {body.get('script')!r}")
            self.scripts.delays[str(body["script"])] = float(body.get("seconds", 0))
            return {"ok": True}
        if command == "engine_fault":
            self.engine.inject(body)
            return {"ok": True}
        if command == "reboot":
            threading.Thread(
                target=self.reboot,
                kwargs={"downtime_s": float(body.get("downtime_s", 1.0))},
                daemon=True,
            ).start()
            return {"ok": True}
        if command == "kill_host":
            self.endpoint.kill_host(str(body["host"]))
            return {"ok": True}
        if command == "revive_host":
            self.endpoint.revive_host(str(body["host"]))
            return {"ok": True}
        if command == "lost_writes":
            return self.engine.lost_writes(str(body["vm_id"]))
        if command == "jobs":
            return {
                "jobs": [j.to_model().model_dump() | {"host": j.host} for j in self.engine.jobs]
            }
        if command == "set_volume":
            with self.estate.lock:
                for vol in self.estate.data.volumes:
                    if vol.root.lower() == str(body["root"]).lower() and (
                        "host" not in body or body["host"] in vol.hosts
                    ):
                        for key in ("capacity", "bandwidth_mbps", "filters", "get_volume_error"):
                            if key in body:
                                setattr(vol, key, body[key])
                self.estate.save()
            return {"ok": True}
        if command == "settings":
            with self.estate.lock:
                for key, value in body.items():
                    if not hasattr(self.estate.settings, key):
                        raise ValueError(f"no lab setting {key!r}")
                    setattr(self.estate.settings, key, value)
                self.estate.save()
            return {"ok": True}
        if command == "stop":
            threading.Thread(target=self.stop, daemon=True).start()
            return {"ok": True}
        raise ValueError(f"unknown lab command {command!r}")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m hvmove.lab.server LAB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = LabServer(Path(args[0])).start()
    (server.dir / "lab.pid").write_text(str(os.getpid()), encoding="ascii")

    def _term(_sig: int, _frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    log.info("lab up: %s", {h.name: h.port for h in server.estate.data.hosts})
    server.stopped.wait()
    (server.dir / "lab.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
