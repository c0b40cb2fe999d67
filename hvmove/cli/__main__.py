"""`python -m hvmove.cli`: the same as the hvmove command."""

from hvmove.cli import app

app()
