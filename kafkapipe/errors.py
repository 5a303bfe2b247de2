"""Error categories and the exceptions that carry them.

Every failure in the pipeline ends up as one :class:`ErrorCategory`; the
category, not the exception class, decides where a task goes next
(docs/contract.md, "What each failure gets"). Exception messages must never contain secrets or full
presigned URLs: build them with :func:`kafkapipe.log.redact_url`.
"""

from __future__ import annotations

import enum


class ErrorCategory(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    VALIDATION = "validation"
    AUTH = "auth"
    CIRCUIT_OPEN = "circuit_open"
    EXPIRED = "expired"
    STORAGE = "storage"


class PipelineError(Exception):
    """Base of every classified failure.

    ``http_status`` is the last status the server sent, if any;
    ``retry_after`` is the server's Retry-After in seconds, if any.
    """

    category: ErrorCategory = ErrorCategory.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after


class TransientError(PipelineError):
    category = ErrorCategory.TRANSIENT


class PermanentError(PipelineError):
    category = ErrorCategory.PERMANENT


class ValidationError(PipelineError):
    """The input breaks a rule: bad URL, disallowed type, too large."""

    category = ErrorCategory.VALIDATION


class ExpiredError(PipelineError):
    category = ErrorCategory.EXPIRED


class AuthError(PipelineError):
    """Credentials were refused; the stage pauses instead of dead-lettering."""

    category = ErrorCategory.AUTH


class CircuitOpenError(PipelineError):
    category = ErrorCategory.CIRCUIT_OPEN


class StorageUnavailableError(PipelineError):
    """Our own storage cannot take the write (disk full, read-only, service busy, container missing).

    Says nothing about the task or its source host: like :class:`AuthError` it holds the stage and
    the same task is tried again once storage is back; it never dead-letters and never counts
    against the source host's circuit.
    """

    category = ErrorCategory.STORAGE


class ConfigError(Exception):
    """A configuration problem; the message names the key and the file."""


def refuse(problems: list[str]) -> None:
    """ConfigError for the first of ``problems`` (each already names its key); nothing when empty."""
    if problems:
        raise ConfigError(problems[0])


def category_of(exc: BaseException) -> ErrorCategory:
    """Classify any exception; unknown ones are permanent, never swallowed."""
    if isinstance(exc, PipelineError):
        return exc.category
    return ErrorCategory.PERMANENT
