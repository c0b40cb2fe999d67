"""A night's move whose run the Prefect API could not create (a busy server answers 503) is
started again; a move that failed on its own is not (running migrate-vm again is safe, but a
real failure repeated is noise and a second attempt at what the host refused)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Completed

pytestmark = pytest.mark.slow  # a real Prefect server runs the task and its retries


def _http_error(status: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/api/flow_runs/")
    response = httpx.Response(status, request=request, json={"exception_message": "x"})
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("busy", request=request, response=response)
    )


def _run(monkeypatch: pytest.MonkeyPatch, first: Exception) -> tuple[list[dict], Any]:
    import flows.migrate_vm
    from flows.fanout import move_task

    calls: list[dict] = []

    def fake(**params: Any) -> Any:
        calls.append(params)
        if len(calls) == 1:
            raise first
        return Completed(message="web01 moved and verified")

    monkeypatch.setattr(flows.migrate_vm, "migrate_vm", fake)
    task = move_task.with_options(retry_delay_seconds=0)
    state = task({"vm": "web01", "host": "hv01"}, return_state=True)
    return calls, state


def test_a_move_the_api_could_not_start_is_started_again(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, state = _run(monkeypatch, _http_error(503))
    assert len(calls) == 2 and state.is_completed(), state
    assert state.result() == "Completed: web01 moved and verified"


def test_an_unreachable_api_is_retried_too(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, state = _run(monkeypatch, httpx.ConnectError("refused"))
    assert len(calls) == 2 and state.is_completed(), state


@pytest.mark.parametrize("error", [_http_error(409), ValueError("the move's own failure")])
def test_other_failures_are_not_retried(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    calls, state = _run(monkeypatch, error)
    assert len(calls) == 1 and state.is_failed(), state
