"""The lab's WS-Management endpoint, driven by the real, unmodified pypsrp client."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.client import Client
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from hvmove.lab.tls import make_self_signed
from hvmove.lab.wsman import Invocation, ScriptFailed, WSManEndpoint

USER = "lab-admin"
PASSWORD = "lab-secret"
NASTY = "VM 'a'; $(Remove-Item C:\\) `n ü 日本\r\n\"quoted\" \t end"
SHELL_NOT_FOUND = 2150858843
OPERATION_TIMEOUT = 2150858793


class Recorder:
    """The test handler: a few fake scripts, and a record of what the endpoint handed over."""

    def __init__(self) -> None:
        self.calls: list[Invocation] = []
        self.lock = threading.Lock()
        self.slow_started = threading.Event()
        self.slow_saw_cancel = threading.Event()

    def __call__(self, inv: Invocation) -> str | list[str] | None:
        with self.lock:
            self.calls.append(inv)
        if inv.script == "echo":
            return json.dumps({"host": inv.host, "params": inv.params}, ensure_ascii=False)
        if inv.script == "many":
            return [f"line {i}" for i in range(3)]
        if inv.script == "nothing":
            return None
        if inv.script == "warn":
            inv.warnings.extend(["disk is nearly full", "second warning"])
            return "done"
        if inv.script == "fail":
            inv.warnings.append("about to fail")
            raise ScriptFailed("VM 'web01' was not found", "VMNotFound", "ObjectNotFound")
        if inv.script == "bug":
            raise KeyError("missing-key")
        if inv.script == "slow":
            self.slow_started.set()
            if inv.cancelled.wait(5):
                self.slow_saw_cancel.set()
            return "too late"
        return f"ran {inv.script[:40]}"

    def count(self, script: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.script == script)

    def wait_count(self, script: str, n: int, timeout: float = 2.0) -> int:
        deadline = time.monotonic() + timeout
        while self.count(script) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.count(script)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def lab(rec: Recorder) -> Iterator[WSManEndpoint]:
    endpoint = WSManEndpoint(rec, username=USER, password=PASSWORD)
    endpoint.add_host("hv01")
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def wsman(lab: WSManEndpoint, host: str = "hv01", *, ssl: bool = False, **kw: Any) -> WSMan:
    settings: dict[str, Any] = {
        "ssl": ssl,
        "auth": "basic",
        "username": USER,
        "password": PASSWORD,
        "no_proxy": True,
        "operation_timeout": 2,
        "read_timeout": 5,
        "reconnection_retries": 0,
    }
    if not ssl:
        settings["encryption"] = "never"
    settings.update(kw)
    return WSMan("127.0.0.1", port=lab.port(host), **settings)


@contextlib.contextmanager
def open_pool(lab: WSManEndpoint, host: str = "hv01", **kw: Any) -> Iterator[RunspacePool]:
    pool = RunspacePool(wsman(lab, host, **kw))
    pool.open()
    try:
        yield pool
    finally:
        # After an injected fault or a killed host the Delete may fail too; that is not the point.
        with contextlib.suppress(Exception):
            pool.close()


def run(pool: RunspacePool, script: str, params: dict[str, Any] | None = None) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_script(script)
    if params:
        ps.add_parameters(params)
    ps.invoke()
    return ps


# --- output, parameters, errors, warnings ---------------------------------------------------
def test_json_output_round_trip(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        ps = run(pool, "echo", {"VmName": "web01"})
    assert ps.state == PSInvocationState.COMPLETED
    assert not ps.had_errors and not ps.streams.error
    assert json.loads(ps.output[0]) == {"host": "hv01", "params": {"VmName": "web01"}}


def test_list_and_none_results(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        assert run(pool, "many").output == ["line 0", "line 1", "line 2"]
        nothing = run(pool, "nothing")
    assert nothing.output == [] and nothing.state == PSInvocationState.COMPLETED


def test_parameters_arrive_exactly_and_typed(lab: WSManEndpoint, rec: Recorder) -> None:
    params: dict[str, Any] = {
        "Name": NASTY,
        "Count": 42,
        "Big": 2**31 - 1,
        "Ratio": 0.25,
        "Force": True,
        "WhatIf": False,
        "Paths": ["C:\\VMs\\a.vhdx", "D:\\ü\\b.vhdx", 3],
        "Options": {"mode": "vhds", "nested": {"depth": 2, "tags": ["x", NASTY]}},
        "Switch": None,
        "Blob": b"\x00\x01\xff",
    }
    with open_pool(lab) as pool:
        ps = PowerShell(pool)
        ps.add_script("param-check").add_parameters(params).add_argument("positional 'one'")
        ps.add_argument(7)
        ps.invoke()
    assert not ps.had_errors
    inv = rec.calls[-1]
    assert inv.script == "param-check" and inv.is_script
    assert inv.params == params
    assert inv.params["Name"] == NASTY  # the nasty string, byte for byte
    for name, value in params.items():
        assert type(inv.params[name]) is type(value), name
    assert type(inv.params["Options"]["nested"]["tags"]) is list
    assert inv.args == ["positional 'one'", 7]
    assert [type(a) for a in inv.args] == [str, int]


def test_int_beyond_int32_fails_the_pipeline_with_a_reason(
    lab: WSManEndpoint, rec: Recorder
) -> None:
    # pypsrp 0.9.1 serialises every Python int as <I32>; 2**40 overflows that on any decoder.
    with open_pool(lab) as pool:
        ps = run(pool, "sizes", {"Bytes": 2**40})
        assert run(pool, "echo").output  # the pool is still usable
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    assert "1099511627776" in str(ps.streams.error[0])
    assert ps.streams.error[0].fq_error == "LabDecodeError"
    assert rec.count("sizes") == 0


def test_nasty_script_text_is_passed_verbatim(lab: WSManEndpoint, rec: Recorder) -> None:
    with open_pool(lab) as pool:
        run(pool, NASTY)
    assert rec.calls[-1].script == NASTY


def test_script_failed_is_a_terminating_error(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        ps = run(pool, "fail")
    assert ps.had_errors is True
    assert ps.state == PSInvocationState.FAILED
    assert ps.output == []
    err = ps.streams.error[0]
    assert str(err) == "VM 'web01' was not found"
    assert err.fq_error == "VMNotFound"
    assert err.message.startswith("ObjectNotFound")
    # Warnings written before the throw still arrive, as they do from a real host.
    assert [w.message for w in ps.streams.warning] == ["about to fail"]


def test_handler_bug_is_a_script_failure_with_text(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        ps = run(pool, "bug")
        after = run(pool, "echo")  # the pool survives a lab bug
    assert ps.had_errors is True
    err = ps.streams.error[0]
    assert "KeyError" in str(err) and "missing-key" in str(err)
    assert err.fq_error == "LabHandlerError"
    assert "Traceback" in (err.script_stacktrace or "")
    assert not after.had_errors


def test_warnings_arrive_on_the_warning_stream(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        ps = run(pool, "warn")
    assert ps.output == ["done"]
    assert not ps.had_errors
    assert [w.message for w in ps.streams.warning] == ["disk is nearly full", "second warning"]


def test_execute_ps_sends_a_command_not_a_script(lab: WSManEndpoint, rec: Recorder) -> None:
    client = Client(
        "127.0.0.1",
        port=lab.port("hv01"),
        ssl=False,
        auth="basic",
        encryption="never",
        username=USER,
        password=PASSWORD,
        no_proxy=True,
        operation_timeout=2,
        read_timeout=5,
        reconnection_retries=0,
    )
    output, _streams, had_errors = client.execute_ps("Get-VM -Name 'x'")
    inv = rec.calls[-1]
    assert (inv.script, inv.is_script) == ("Invoke-Expression", False)
    assert inv.params == {"Command": "Get-VM -Name 'x'"}
    assert output == "ran Invoke-Expression" and not had_errors


def test_large_script_is_reassembled_from_command_and_send(
    lab: WSManEndpoint, rec: Recorder
) -> None:
    script = "# " + "x" * 700_000 + "\n'end'"
    with open_pool(lab) as pool:
        ps = run(pool, script)
    assert not ps.had_errors
    assert rec.calls[-1].script == script
    assert ("hv01", "Send") in lab.log


# --- long-running pipelines, stop, concurrency ------------------------------------------------
def test_slow_handler_poll_then_stop(lab: WSManEndpoint, rec: Recorder) -> None:
    with open_pool(lab) as pool, open_pool(lab) as other:
        ps = PowerShell(pool)
        ps.add_script("slow")
        ps.begin_invoke()
        assert rec.slow_started.wait(2)

        # A slow pipeline must not hold up another pool's invoke.
        t0 = time.monotonic()
        assert json.loads(run(other, "echo").output[0])["host"] == "hv01"
        assert time.monotonic() - t0 < 0.5

        # poll_invoke long-polls for OperationTimeout, gets fault 2150858793, swallows it.
        t0 = time.monotonic()
        deadline = t0 + 0.5
        while ps.state == PSInvocationState.RUNNING and time.monotonic() < deadline:
            ps.poll_invoke(timeout=1)
        assert 0.9 <= time.monotonic() - t0 < 2.5
        assert ps.state == PSInvocationState.RUNNING

        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        assert rec.calls[-2].cancelled.is_set()  # set before the Signal was answered
        assert rec.slow_saw_cancel.wait(2)
        assert run(pool, "echo").output  # the pool is still usable after a stop


def test_receive_timeout_fault_is_transparent(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action="Receive", kind="wsmanfault", code=OPERATION_TIMEOUT)
        ps = run(pool, "echo")
    assert ps.output and not ps.had_errors


def test_concurrent_pools(lab: WSManEndpoint) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with open_pool(lab) as pool:
                for _ in range(5):
                    assert run(pool, "echo").output
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []


# --- fault injection --------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["Command", "Receive"])
@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("drop", None, requests.exceptions.ConnectionError),
        ("status", 401, AuthenticationError),
        ("status", 500, WinRMTransportError),
        ("status", 503, WinRMTransportError),
        ("wsmanfault", SHELL_NOT_FOUND, WSManFaultError),
    ],
)
def test_fault_maps_to_exception(
    lab: WSManEndpoint,
    rec: Recorder,
    action: str,
    kind: str,
    code: int | None,
    expected: type[Exception],
) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action=action, kind=kind, code=code)
        with pytest.raises(expected) as info:
            run(pool, "count-me")
        assert type(info.value) is expected
        if expected in (WinRMTransportError, WSManFaultError):
            assert info.value.code == code
        if expected is WSManFaultError:
            assert info.value.machine == "hv01"
        # Not processed: a fault on Command means the script never ran.
        assert rec.count("count-me") == (0 if action == "Command" else 1)
        assert len(lab.faults) == 0
        assert run(pool, "echo").output  # one fault per entry; the next request is served


def test_drop_after_command_ran_the_script_once(lab: WSManEndpoint, rec: Recorder) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action="Command", kind="drop_after")
        with pytest.raises(requests.exceptions.ConnectionError):
            run(pool, "count-me")
        # The reply was lost, but the host did the work: a blind retry would run it twice.
        assert rec.wait_count("count-me", 1) == 1
        assert run(pool, "echo").output


def test_drop_after_receive_loses_the_output(lab: WSManEndpoint, rec: Recorder) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action="Receive", kind="drop_after")
        with pytest.raises(requests.exceptions.ConnectionError):
            run(pool, "count-me")
        assert rec.count("count-me") == 1


def test_delay_longer_than_read_timeout_on_command(lab: WSManEndpoint) -> None:
    with open_pool(lab, operation_timeout=0.2, read_timeout=0.4) as pool:
        lab.faults.add(action="Command", kind="delay", seconds=1.0)
        t0 = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            run(pool, "count-me")
        assert time.monotonic() - t0 < 0.9


def test_short_delay_is_only_slow(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action="*", kind="delay", seconds=0.1, times=2)
        t0 = time.monotonic()
        assert run(pool, "echo").output
        assert time.monotonic() - t0 >= 0.2


def test_close_after_reply_then_next_request_reconnects(lab: WSManEndpoint) -> None:
    with open_pool(lab) as pool:
        lab.faults.add(action="Receive", kind="close_after")
        assert run(pool, "echo").output
        time.sleep(0.1)  # urllib3 notices the closed socket before reusing it
        assert run(pool, "echo").output


def test_fault_times_and_host_filter(lab: WSManEndpoint) -> None:
    lab.add_host("hv02")
    with open_pool(lab, "hv01") as one, open_pool(lab, "hv02") as two:
        lab.faults.add(action="Command", kind="status", code=503, host="hv02", times=2)
        assert run(one, "echo").output
        for _ in range(2):
            with pytest.raises(WinRMTransportError):
                run(two, "echo")
        assert run(two, "echo").output
    lab.faults.add(action="Command", kind="drop")
    lab.faults.clear()
    assert len(lab.faults) == 0


def test_fault_queue_rejects_typos(lab: WSManEndpoint) -> None:
    with pytest.raises(ValueError):
        lab.faults.add(action="command", kind="drop")
    with pytest.raises(ValueError):
        lab.faults.add(action="Command", kind="dropp")
    with pytest.raises(ValueError):
        lab.faults.add(action="Command", kind="status")


# --- hosts: kill, revive, several hosts ---------------------------------------------------------
def test_kill_and_revive_host(lab: WSManEndpoint, rec: Recorder) -> None:
    port = lab.port("hv01")
    with open_pool(lab) as old, open_pool(lab) as busy:
        assert run(old, "echo").output
        assert old.is_alive()
        slow = PowerShell(busy)
        slow.add_script("slow")
        slow.begin_invoke()
        assert rec.slow_started.wait(2)

        lab.kill_host("hv01")
        assert rec.slow_saw_cancel.wait(2)  # a host that goes away takes its scripts with it
        with pytest.raises(requests.exceptions.ConnectionError):
            run(old, "echo")
        with pytest.raises(requests.exceptions.ConnectionError):
            old.close()

        lab.revive_host("hv01")
        assert lab.port("hv01") == port
        with open_pool(lab) as fresh:
            assert json.loads(run(fresh, "echo").output[0])["host"] == "hv01"
            assert fresh.is_alive()
        # A rebooted host has no shells: the old pool's shell is gone.
        with pytest.raises(WSManFaultError) as info:
            run(busy, "echo")
        assert info.value.code == SHELL_NOT_FOUND


def test_two_hosts_on_two_ports(lab: WSManEndpoint) -> None:
    lab.add_host("hv02")
    assert lab.port("hv01") != lab.port("hv02")
    with open_pool(lab, "hv01") as one, open_pool(lab, "hv02") as two:
        assert json.loads(run(one, "echo").output[0])["host"] == "hv01"
        assert json.loads(run(two, "echo").output[0])["host"] == "hv02"
    assert {h for h, _ in lab.log} == {"hv01", "hv02"}
    assert ("hv02", "Create") in lab.log
    with pytest.raises(ValueError):
        lab.add_host("hv02")


def test_stop_cuts_everything(lab: WSManEndpoint, rec: Recorder) -> None:
    with open_pool(lab) as pool:
        slow = PowerShell(pool)
        slow.add_script("slow")
        slow.begin_invoke()
        assert rec.slow_started.wait(2)
        lab.stop()
        assert rec.slow_saw_cancel.wait(2)
        with pytest.raises(requests.exceptions.ConnectionError):
            slow.poll_invoke(timeout=1)


# --- auth and TLS ---------------------------------------------------------------------------------
def test_wrong_password_is_authentication_error(lab: WSManEndpoint) -> None:
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman(lab, password="wrong")).open()
    assert lab.log == []  # rejected before any WS-Man processing


def test_https_with_lab_certificate(rec: Recorder, cert_pair: tuple[Path, Path]) -> None:
    cert, _key = cert_pair
    with WSManEndpoint(rec, username=USER, password=PASSWORD, tls=cert_pair) as lab:
        lab.add_host("hv01")
        with open_pool(lab, ssl=True, cert_validation=str(cert)) as pool:
            assert json.loads(run(pool, "echo").output[0])["host"] == "hv01"
        with pytest.raises(requests.exceptions.SSLError):
            RunspacePool(wsman(lab, ssl=True, cert_validation=True)).open()
        # The failed handshake must not have broken the listener.
        with open_pool(lab, ssl=True, cert_validation=str(cert)) as pool:
            assert run(pool, "echo").output


def test_self_signed_files_are_reused_and_private(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    assert (cert.name, key.name) == ("lab-cert.pem", "lab-key.pem")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    before = (cert.read_bytes(), key.read_bytes())
    assert make_self_signed(tmp_path) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == before
    key.write_text("garbage")  # unusable files are replaced, not trusted
    make_self_signed(tmp_path)
    assert cert.read_bytes() != before[0]


# --- the /lab/ control route ------------------------------------------------------------------
def post(
    lab: WSManEndpoint,
    command: str,
    body: Any,
    auth: tuple[str, str] = (USER, PASSWORD),
    host: str = "hv01",
) -> requests.Response:
    url = f"http://127.0.0.1:{lab.port(host)}/lab/{command}"
    with requests.Session() as session:
        session.trust_env = False  # no proxy for 127.0.0.1
        return session.post(url, json=body, auth=auth, timeout=5)


@pytest.fixture
def controlled(rec: Recorder) -> Iterator[WSManEndpoint]:
    holder: list[WSManEndpoint] = []

    def control(command: str, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = holder[0]
        if command == "fault":
            endpoint.faults.add(**body)
            return {"pending": len(endpoint.faults)}
        if command == "kill":
            endpoint.kill_host(body["host"])
            return {"killed": body["host"]}
        if command == "reboot":
            endpoint.kill_host(body["host"])
            endpoint.revive_host(body["host"])
            return {"rebooted": body["host"]}
        if command == "bad":
            raise ValueError("no such VM: " + body.get("vm", "?"))
        return {"command": command, "body": body}

    endpoint = WSManEndpoint(rec, username=USER, password=PASSWORD, control=control)
    holder.append(endpoint)
    endpoint.add_host("hv01")
    endpoint.add_host("hv02")
    yield endpoint
    endpoint.stop()


def test_control_route_answers_json(controlled: WSManEndpoint) -> None:
    reply = post(controlled, "echo", {"a": [1, NASTY]})
    assert reply.status_code == 200
    assert reply.json() == {"command": "echo", "body": {"a": [1, NASTY]}}
    bad = post(controlled, "bad", {"vm": "web01"})
    assert (bad.status_code, bad.text.strip()) == (400, "no such VM: web01")
    assert post(controlled, "echo", {}, auth=(USER, "wrong")).status_code == 401
    assert post(controlled, "echo", [1, 2]).status_code == 400


def test_control_route_drives_faults_and_ignores_them(controlled: WSManEndpoint) -> None:
    assert post(controlled, "fault", {"action": "*", "kind": "drop"}).json() == {"pending": 1}
    assert post(controlled, "echo", {}).status_code == 200  # /lab/ is never faulted
    assert len(controlled.faults) == 1
    assert post(controlled, "fault", {"action": "Nope", "kind": "drop"}).status_code == 400
    with pytest.raises(requests.exceptions.ConnectionError):
        RunspacePool(wsman(controlled)).open()


def test_control_can_kill_its_own_host(controlled: WSManEndpoint) -> None:
    with open_pool(controlled, "hv01") as pool:
        reply = post(controlled, "kill", {"host": "hv01"}, host="hv01")
        assert reply.json() == {"killed": "hv01"}
        with pytest.raises(requests.exceptions.ConnectionError):
            run(pool, "echo")
    assert post(controlled, "reboot", {"host": "hv01"}, host="hv02").status_code == 200
    with open_pool(controlled, "hv01") as pool:
        assert run(pool, "echo").output


def test_control_route_without_handler_is_404(lab: WSManEndpoint) -> None:
    assert post(lab, "anything", {}).status_code == 404


def test_unknown_path_and_method(lab: WSManEndpoint) -> None:
    base = f"http://127.0.0.1:{lab.port('hv01')}"
    with requests.Session() as session:
        session.trust_env = False
        assert session.post(base + "/other", auth=(USER, PASSWORD), timeout=5).status_code == 404
        assert session.get(base + "/wsman", auth=(USER, PASSWORD), timeout=5).status_code == 501
