"""The Typer root of the ``hvmove`` command, its shared options and the error boundary: a user
mistake is one clear line, never a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from hvmove.cli.render import err, plain
from hvmove.errors import HvmoveError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Hyper-V storage live migration, orchestrated with Prefect.",
)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="hvmove.yaml to use (default: ./hvmove.yaml)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
PlanArg = Annotated[Path, typer.Argument(help="plan file (YAML: moves: [{host, vm, mode, ...}])")]


def friendly(fn: F) -> F:
    """Turn hvmove's own errors (bad config, unreachable host) into one line and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HvmoveError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def fail(message: str | None, code: int = 1) -> typer.Exit:
    """Print one error line (names and paths exactly as written) and exit with CODE."""
    err.print(f"[bold red]error:[/] {plain(message or 'failed')}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


_API: dict[str, str] = {}  # API URL -> its UI URL, as Prefect's settings give them


def prefect_api() -> str:
    """The Prefect API in use: the one the user's Prefect settings name, or a local server
    started on first use. Says which on stderr (stdout may carry JSON)."""
    from hvmove.prefect_local import ensure_server

    api = ensure_server()
    _API[api.url] = api.ui
    err.print(plain(api.describe()), highlight=False, soft_wrap=True)
    return api.url


def ui(api: str) -> str:
    from hvmove.prefect_local import ui_url

    return _API.get(api) or ui_url(api)
