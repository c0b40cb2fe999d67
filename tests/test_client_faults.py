"""Transport faults at the lab's endpoint map to the right typed error, and a lost reply to a
mutating call never turns into a second move."""

from __future__ import annotations

import pytest

from hvmove.hyperv import errors as e
from hvmove.moves import start_or_attach
from tests.conftest import Lab, make_lab


def faults(lab: Lab):
    return lab.server.endpoint.faults


def test_dropped_read_is_transient_and_the_next_call_reconnects(client, lab: Lab) -> None:
    client.host_facts()
    faults(lab).add(action="Receive", kind="drop")
    with pytest.raises(e.TransientError) as info:
        client.host_facts()
    assert not isinstance(info.value, e.MaybeRanError)  # a read: nothing to look at first
    assert client.host_facts().name == "HV01"


def test_lost_reply_to_start_is_maybe_ran_and_never_moves_twice(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=1.0)
    try:
        with lab.client() as client:
            vm = lab.vm("web01")
            client.host_facts()  # pool open: the next Command is the script's
            faults(lab).add(action="Command", kind="drop_after")
            with pytest.raises(e.MaybeRanError):
                client.start_move(vm.id, "all", destination="E:\\m\\web01")
            # the move did start; looking first attaches to it
            again = start_or_attach(client, vm.id, "all", destination="E:\\m\\web01")
            assert again.status == "already_running"
            assert len(lab.server.engine.jobs_of(vm.id)) == 1
            # even a blind retry of the script itself refuses to start a second move
            blind = client.start_move(vm.id, "all", destination="E:\\m\\web01")
            assert blind.status == "already_running"
            assert len(lab.server.engine.jobs_of(vm.id)) == 1
            client.stop_move(vm.id)
    finally:
        lab.server.stop()


def test_lost_reply_through_start_or_attach_itself(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=1.0)
    try:
        with lab.client() as client:
            vm = lab.vm("sql01")
            client.host_facts()
            # the status call's Command passes untouched, then the start's reply is lost
            faults(lab).add(action="Command", kind="delay", seconds=0)
            faults(lab).add(action="Command", kind="drop_after")
            result = start_or_attach(client, vm.id, "all", destination="E:\\n\\sql01")
            assert result.status == "already_running"  # found by looking, not started again
            assert len(lab.server.engine.jobs_of(vm.id)) == 1
            client.stop_move(vm.id)
    finally:
        lab.server.stop()


@pytest.mark.parametrize(
    ("code", "expected"),
    [(401, e.AuthenticationFailed), (503, e.TransientError), (500, e.TransientError)],
)
def test_http_status_faults(client, lab: Lab, code: int, expected: type) -> None:
    client.host_facts()
    faults(lab).add(action="Command", kind="status", code=code)
    with pytest.raises(expected) as info:
        client.host_facts()
    if code == 503:
        assert not isinstance(info.value, e.MaybeRanError)


def test_http_500_on_a_mutating_call_is_maybe_ran(client, lab: Lab) -> None:
    client.host_facts()
    faults(lab).add(action="Command", kind="status", code=500)
    with pytest.raises(e.MaybeRanError):
        client.remove_files(["D:\\nothing.tmp"], [])


def test_wrong_password_is_permanent(lab: Lab) -> None:
    from pydantic import SecretStr

    from hvmove.hyperv.client import HostClient

    c = HostClient(lab.config.hosts[0], SecretStr("wrong"), base_dir=lab.dir)
    with c, pytest.raises(e.AuthenticationFailed):
        c.host_facts()


def test_slow_reply_past_read_timeout(client, lab: Lab) -> None:
    client.host.operation_timeout, client.host.read_timeout = 1, 2
    client.host_facts()
    client._drop_pool()
    faults(lab).add(action="Command", kind="delay", seconds=3)
    with pytest.raises(e.TransientError):
        client.host_facts()
    assert client.host_facts().name == "HV01"


def test_host_gone_then_back(client, lab: Lab) -> None:
    client.host_facts()
    lab.server.endpoint.kill_host("hv01")
    with pytest.raises(e.TransientError):
        client.host_facts()
    with pytest.raises(e.HostUnreachable):  # nothing listens: provably never reached the host
        client.host_facts()
    lab.server.endpoint.revive_host("hv01")
    assert client.host_facts().name == "HV01"


def test_deadline_stops_a_call_and_says_maybe_ran(tmp_path) -> None:
    lab = make_lab(tmp_path, rate_scale=0.02)  # a probe on this volume takes minutes
    try:
        with lab.client() as client:
            with pytest.raises(e.MaybeRanError, match="deadline"):
                client.run("Measure-Bandwidth", timeout=1.5, DestinationPath="E:\\p", SizeMiB=64)
            assert client.host_facts().name == "HV01"
    finally:
        lab.server.stop()


def test_non_terminating_error_fails_the_call(client, lab: Lab) -> None:
    """pypsrp sets had_errors only for a throw; a Write-Error must fail the call too."""
    lab.server.scripts.write_errors["Get-HostFacts"] = "Get-VMHost : access is denied"
    with pytest.raises(e.ScriptError, match="access is denied"):
        client.host_facts()
    lab.server.scripts.write_errors.clear()
    assert client.host_facts().name == "HV01"
