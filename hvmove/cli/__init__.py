"""The ``hvmove`` command (Typer + Rich), one module per command group; rendering in
``render``. Importing this package registers every command on ``app``, in the order ``--help``
lists them."""

from importlib import import_module

from hvmove.cli.app import app

for _group in ("doctor", "inventory", "moves", "deploy", "history", "demo", "lab", "automations"):
    import_module(f"hvmove.cli.{_group}")

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
