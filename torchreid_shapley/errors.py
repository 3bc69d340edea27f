"""Errors the command line turns into one ``error:`` line and exit status 2.

Every message names the bad value, what was expected and how to fix it.
"""

from __future__ import annotations


class ShapleyError(Exception):
    """Bad input from the user: printed as ``error: <message>``, exit status 2."""

    exit_status = 2


class RecordsError(ShapleyError):
    """A records file or study directory that cannot be used."""


class MissingCoalitionError(ShapleyError):
    """A coalition the requested values need has no successful record."""

    def __init__(self, message: str, *, missing: list[tuple[str, ...]] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


class FitRefused(ShapleyError):
    """The log curve cannot be fitted; the data-scale values are undefined."""


class ConfigError(ShapleyError):
    """A configuration value or command-line option that cannot be used."""
