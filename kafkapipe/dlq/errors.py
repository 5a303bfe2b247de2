"""How the tool fails: its two exceptions and the exit codes they become."""

from __future__ import annotations

from kafkapipe.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE  # noqa: F401 - the tool's codes


class DlqError(Exception):
    """A runtime failure of the tool (exit 1); the message says what and where."""


class UsageError(Exception):
    """Arguments that cannot work (exit 2)."""
