"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class HvmoveError(Exception):
    """Base of every error hvmove raises on purpose."""


class ConfigError(HvmoveError):
    """A configuration or plan file is wrong; the message names the file, the entry and the fix."""
