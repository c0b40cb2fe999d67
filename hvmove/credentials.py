"""Turn a credential reference into a password, at the last moment.

The one module of the library allowed to import Prefect (lazily): a reference may name a Prefect
Secret block. Values stay SecretStr so that a log line or repr never shows them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from hvmove.config import CredentialRef
from hvmove.errors import ConfigError


def resolve(ref: CredentialRef, *, base_dir: Path | None = None, host: str = "") -> SecretStr:
    where = f"host {host!r}: " if host else ""
    if ref.env:
        value = os.environ.get(ref.env)
        if value is None and base_dir is not None:
            value = read_env_file(base_dir / ".env").get(ref.env)
        if not value:
            raise ConfigError(
                f"{where}password variable {ref.env} is not set; export it, or put it in the .env "
                "file beside hvmove.yaml"
            )
        return SecretStr(value)
    assert ref.secret_block is not None
    try:
        from prefect.blocks.system import Secret  # only when a block is named: Prefect is heavy
    except ImportError as exc:  # pragma: no cover - prefect is a dependency
        raise ConfigError(f"{where}Prefect is needed to read Secret blocks: {exc}") from None
    try:
        # _sync=True: Block.load is dispatched on the caller's context, and under an async flow
        # (or any running event loop) it returns an un-awaited coroutine; this function is
        # called from flows, tasks and plain threads alike, so it always asks for the sync path
        # (the maintainers' answer in PrefectHQ/prefect#14712)
        value = Secret.load(ref.secret_block, _sync=True).get()
    except Exception as exc:
        raise ConfigError(
            f"{where}cannot load Prefect Secret block {ref.secret_block!r} ({_why(exc)}); "
            "create it with `prefect block create secret` or in the UI (Blocks > Secret), and "
            "check that PREFECT_API_URL names the server that holds it"
        ) from None
    return SecretStr(str(value))


def _why(exc: Exception) -> str:
    """The reason without the value: a missing block says so, anything else by its type."""
    text = str(exc)
    if isinstance(exc, ValueError) and "Unable to find block document" in text:
        return "no such block on the Prefect server"
    return type(exc).__name__


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (the .env convention); missing file -> empty."""
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values
