"""Logging: one JSON object per line, with the pipeline's context attached.

Every line carries ``pid`` and ``stage`` (``bind(stage=...)`` once per process;
the supervisor binds ``supervisor``). Per-message context (trace_id, task_id,
topic, partition, offset) lives in a :class:`contextvars.ContextVar`, so
thread-pool downloads log their own task.

Nothing here ever prints a query string: presigned URLs carry credentials.
Callers pass URLs through :func:`redact_url`; :class:`ScrubFilter` is the last
line of defence for anything that slips through (a URL inside an exception
message, a header dumped by a library).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

_CONTEXT: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar(
    "kafkapipe_log", default={}  # noqa: B039 - never mutated: context() and bind() build new dicts
)
# Fields for every line of this process, whatever the thread: the stage a worker runs.
# Threads do not inherit context variables, so these cannot live in _CONTEXT.
_PROCESS: dict[str, object] = {"stage": "-"}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

REDACTED = "<redacted>"

# Parameter names whose values are credentials wherever they appear (query strings,
# connection strings, form bodies). Matched case-insensitively, as `name=value`.
_SECRET_PARAMS = (
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "awsaccesskeyid",
    "accountkey",
    "sharedaccesskey",
    "sharedaccesssignature",
    "client_secret",
    "client_assertion",
    "password",
    "passwd",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "sas_token",
)
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # userinfo in a URL: scheme://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@"), rf"\1{REDACTED}@"),
    # the whole query string of any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#\"'<>]*)\?(?!<redacted>)[^\s#\"'<>]+"), rf"\1?{REDACTED}"),
    # name=value credentials outside URLs (connection strings, bodies, headers)
    (
        re.compile(
            r"(?i)(?<![a-z0-9_-])(" + "|".join(re.escape(p) for p in _SECRET_PARAMS) + r")="
            r"(?!<redacted>)[^&\s\"'<>;,]+"
        ),
        rf"\1={REDACTED}",
    ),
    # "access_token": "..." in JSON bodies
    (
        re.compile(r"(?i)(\"(?:access_token|refresh_token|id_token|client_secret|password|accountkey|"
                   r"sas_token|token)\"\s*:\s*\")[^\"]*\""),
        rf'\1{REDACTED}"',
    ),
    # Authorization schemes
    (re.compile(r"(?i)\b(bearer|basic|sharedkey)\s+(?!<redacted>)[A-Za-z0-9\-._~+/:]+=*"), rf"\1 {REDACTED}"),
    # anything shaped like a JWT
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def scrub(text: str) -> str:
    """Remove credentials and query strings from free text. Idempotent."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_value(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` — no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@contextlib.contextmanager
def context(**fields: object) -> Iterator[None]:
    """Attach fields to every log line emitted inside the block (this thread/context)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: object) -> None:
    """Set fields for every line this process logs from now on, in every thread (e.g. ``stage``)."""
    _PROCESS.update(fields)


def current_fields() -> dict[str, object]:
    """Process fields, then this context's fields: what the next line will carry."""
    return {**_PROCESS, **_CONTEXT.get()}


class ScrubFilter(logging.Filter):
    """Renders the message once and scrubs it, its traceback and its extra fields.

    Installed on the handler, so it sees every record of every logger,
    including third-party ones that might print a presigned URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!s} (bad log arguments)"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, _scrub_value(value))
        return True


class RepeatFilter(logging.Filter):
    """Lets one of a run of identical lines through per ``interval`` seconds.

    Identical means the same logger, level and rendered message (after scrubbing). The first
    line after a quiet interval carries ``repeated``: how many copies were held back, so a
    storm is visible without filling the disk.
    """

    def __init__(self, interval: float = 10.0, max_keys: int = 4096, clock=time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # key → [last emitted, held back]
        self._lock = threading.Lock()  # handlers filter before taking their own lock

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        with self._lock:
            return self._admit(key, record, self._clock())

    def _admit(self, key: tuple[str, int, str], record: logging.LogRecord, now: float) -> bool:
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.repeated = entry[1]
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            **current_fields(),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        entry = _scrub_value(entry)  # context values too: a URL bound by a caller
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in current_fields().items())
        base = (
            f"{self.formatTime(record)} {record.levelname} pid={os.getpid()} {ctx} "
            f"{record.name}: {record.getMessage()}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            base += "\n" + record.exc_text
        return scrub(base)


def setup(level: str = "INFO", fmt: str = "json", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "msal", "azure"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def flush() -> None:
    """Flush every root handler; a forked worker calls this before ``os._exit``."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
