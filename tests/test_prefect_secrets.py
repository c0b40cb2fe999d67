"""Host passwords from a real Prefect Secret block on a real `prefect server`: a move runs to
completion through the migrate-vm flow, and a missing block is one clear error naming the
block and the host."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from hvmove.credentials import read_env_file
from hvmove.store import Store
from tests.conftest import Lab

pytestmark = pytest.mark.slow


def use_secret_block(lab: Lab, block: str) -> Path:
    """Point every lab host's password at the Secret block BLOCK (and hide the .env file)."""
    path = lab.dir / "hvmove.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for host in doc["hosts"]:
        host["password"] = {"secret_block": block}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_move_with_a_secret_block_password(prefect_api: str, lab: Lab) -> None:
    from prefect.blocks.system import Secret

    from flows.migrate_vm import migrate_vm

    block = f"lab-password-{uuid.uuid4().hex[:8]}"
    password = read_env_file(lab.dir / ".env")["HVMOVE_LAB_PASSWORD"]
    Secret(value=password).save(block)
    config = use_secret_block(lab, block)
    (lab.dir / ".env").rename(lab.dir / "env.hidden")  # the block is the only way in
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination="E:\\VMs\\web01",
        config=str(config),
        poll_seconds=0.1,
        return_state=True,
    )
    assert state.is_completed(), state.message
    record = Store(lab.config.store_url()).moves()[0]
    assert record.status == "completed" and record.verified


def test_missing_secret_block_is_one_clear_error(prefect_api: str, lab: Lab) -> None:
    from flows.migrate_vm import migrate_vm

    config = use_secret_block(lab, "no-such-block")
    state = migrate_vm(
        host="hv01",
        vm="web01",
        destination="E:\\VMs\\web01",
        config=str(config),
        return_state=True,
    )
    assert state.is_failed()
    message = state.message
    assert "'no-such-block'" in message and "hv01" in message, message
    assert "no such block on the Prefect server" in message, message
    assert "coroutine" not in message
    assert lab.server.engine.jobs_of(lab.vm("web01").id) == []


def test_secret_block_resolves_in_async_code_and_threads(prefect_api: str, lab: Lab) -> None:
    """The library asks for a password from flows, tasks and plain threads alike: Prefect
    dispatches Secret.load on the caller's context, and under an async flow it would hand back
    an un-awaited coroutine unless the sync path is asked for."""
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow
    from prefect.blocks.system import Secret

    from hvmove.config import CredentialRef
    from hvmove.credentials import resolve

    block = f"lab-password-{uuid.uuid4().hex[:8]}"
    Secret(value="s3cret").save(block)
    ref = CredentialRef(secret_block=block)

    @flow
    async def async_flow() -> str:
        return resolve(ref, host="hv01").get_secret_value()

    assert asyncio.run(async_flow()) == "s3cret"
    # a plain thread (inventory collects hosts in a pool); the context copy only carries this
    # session's temporary API setting, which a worker has in its environment instead
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(ctx.run, lambda: resolve(ref).get_secret_value()).result()
    assert got == "s3cret"
