"""The wire messages and the one JSON converter for them.

Input events are validated by :func:`parse_event` (the one validator for
events); everything the pipeline produces is an attrs class serialised by
:data:`converter`. Timestamps are aware datetimes: inputs without an offset
are rejected, outputs are always UTC with millisecond precision.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, overload

import attrs
import orjson
from attrs import field, frozen
from cattrs.preconf.orjson import make_converter

SCHEMA_VERSION = 1
SCHEMA_TASK = "download_task/1"
SCHEMA_RESULT = "download_result/1"
SCHEMA_FAILED = "failed_download/1"

STATUS_SUCCESS = "success"
STATUS_TRANSIENT = "failed_transient"
STATUS_PERMANENT = "failed_permanent"

MAX_RESULT_ERROR = 1024
MAX_DLQ_ERROR = 4096
MAX_RETRY_COUNT = 1_000_000
MAX_TRACE_ID = 256  # as events require (parse_event)
MAX_BYTES = 2**63  # exclusive: a signed 64-bit column holds every size below it
_TASK_ID = re.compile(r"[0-9a-f]{32}")


class InvalidMessage(ValueError):
    """A message that breaks the contract; the text says which rule."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(value: datetime) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-25T19:09:22.123+00:00``."""
    if value.tzinfo is UTC:  # what isoformat spells, without its time zone calls
        return _UTC_FORMAT % (value.year, value.month, value.day, value.hour, value.minute, value.second,
                              value.microsecond // 1000)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


_UTC_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%03d+00:00"


class _LastFormatted:
    """:func:`format_ts` of the datetime it was given last, kept with it (by identity).

    One object stands for every task of an event (its timestamp) or of a batch (their
    ``created_at``). Holding the object keeps its id from being reused; the pair is swapped in
    one assignment, so threads sharing this see an old pair or a new one, never a mix.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[datetime | None, str] = (None, "")

    def __call__(self, value: datetime) -> str:
        last = self._last
        if last[0] is value:
            return last[1]
        text = format_ts(value)
        self._last = (value, text)
        return text


def parse_ts(text: str, name: str = "timestamp") -> datetime:
    # Fast path for what producers send: a date-time in UTC ("Z" or "+00:00"). It accepts only
    # what the full rules below accept, with the same value; anything else goes through them.
    if type(text) is str and text[10:11] == "T" and "z" not in text:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if value.tzinfo is UTC:
                return value
    return _parse_ts(text, name)


def _parse_ts(text: str, name: str) -> datetime:
    if not isinstance(text, str):
        raise InvalidMessage(f"{name} must be an RFC 3339 string")
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidMessage(f"{name} is not an RFC 3339 timestamp: {text[:64]!r}") from None
    if value.tzinfo is None or "T" not in text.upper():
        raise InvalidMessage(f"{name} must be an RFC 3339 date-time with an offset: {text[:64]!r}")
    try:  # 0001-01-01T00:00:00+05:00 is valid RFC 3339 but has no UTC instant in range
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidMessage(f"{name} is out of range once converted to UTC: {text[:64]!r}") from None
    return value


@overload
def truncate(text: str, limit: int) -> str: ...
@overload
def truncate(text: str | None, limit: int) -> str | None: ...
def truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def make_task_id(trace_id: str, url: str) -> str:
    return hashlib.sha256(f"{trace_id}\n{url}".encode()).hexdigest()[:32]


def _retry_count_in_range(_instance: Any, attribute: attrs.Attribute, value: int) -> None:
    """``attrs.validators.ge(0)`` then ``lt(MAX_RETRY_COUNT)``, same errors, in one call.

    It runs for every task built, and attrs' ``and_`` of the two costs three calls.
    """
    if not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0: {value}")
    if not value < MAX_RETRY_COUNT:
        raise ValueError(f"'{attribute.name}' must be < {MAX_RETRY_COUNT}: {value}")


@frozen
class ErrorInfo:
    category: str
    message: str


@frozen
class EventMessage:
    trace_id: str
    event_type: str
    timestamp: datetime
    event_subtype: str
    source_system: str = "unknown"
    assignment_id: str | None = None
    estimate_version: str | None = None
    attachments: tuple[str, ...] = ()


@frozen
class DownloadTask:
    task_id: str
    trace_id: str
    attachment_url: str
    blob_path: str
    event_type: str
    event_subtype: str
    source_system: str
    original_timestamp: datetime
    created_at: datetime
    assignment_id: str | None = None
    estimate_version: str | None = None
    retry_count: int = field(default=0, validator=_retry_count_in_range)
    retry_at: datetime | None = None
    last_error: ErrorInfo | None = None
    metadata: dict[str, str] = field(factory=dict)
    schema_version: int = SCHEMA_VERSION


@frozen
class DownloadResult:
    task_id: str
    trace_id: str
    attachment_url: str
    blob_path: str
    status: str
    attempt: int
    completed_at: datetime
    duration_ms: int
    http_status: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    file_type: str | None = None
    error_category: str | None = None
    error_message: str | None = field(default=None, converter=lambda m: truncate(m, MAX_RESULT_ERROR))
    schema_version: int = SCHEMA_VERSION


@frozen
class FailedDownload:
    task: DownloadTask
    error_category: str
    error_message: str = field(converter=lambda m: truncate(m, MAX_DLQ_ERROR))
    attempts: int
    failed_at: datetime
    stage: str
    schema_version: int = SCHEMA_VERSION


def _make_converter():
    conv = make_converter(forbid_extra_keys=False)
    conv.register_unstructure_hook(datetime, format_ts)
    conv.register_structure_hook(datetime, lambda v, _: parse_ts(v, "timestamp"))
    conv.register_unstructure_hook(DownloadTask, _task_unstructurer(conv))
    return conv


def _task_unstructurer(conv) -> Callable[[DownloadTask], dict[str, Any]]:
    """The dict cattrs would generate for a task, built without a hook call per field.

    Every task ingest writes goes through here. The fields that are set only on retried or
    replayed tasks still go through ``conv``'s own hooks; the timestamps shared by the tasks of
    an event or a batch are formatted once.
    """
    original_text, created_text = _LastFormatted(), _LastFormatted()

    def unstructure_task(task: DownloadTask) -> dict[str, Any]:
        retry_at, last_error, metadata = task.retry_at, task.last_error, task.metadata
        return {
            "task_id": task.task_id,
            "trace_id": task.trace_id,
            "attachment_url": task.attachment_url,
            "blob_path": task.blob_path,
            "event_type": task.event_type,
            "event_subtype": task.event_subtype,
            "source_system": task.source_system,
            "original_timestamp": original_text(task.original_timestamp),
            "created_at": created_text(task.created_at),
            "assignment_id": task.assignment_id,
            "estimate_version": task.estimate_version,
            "retry_count": task.retry_count,
            "retry_at": None if retry_at is None else format_ts(retry_at),
            "last_error": None if last_error is None else conv.unstructure(last_error, ErrorInfo),
            "metadata": conv.unstructure(metadata, dict[str, str]) if metadata else {},
            "schema_version": task.schema_version,
        }

    return unstructure_task


converter = _make_converter()


def dumps(value: Any) -> bytes:
    return orjson.dumps(converter.unstructure(value))


def loads(data: bytes, cls: type) -> Any:
    """Decode one of our own messages; raises InvalidMessage naming the problem."""
    try:
        value = converter.structure(orjson.loads(data), cls)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    except Exception as exc:  # cattrs groups; classified here, never swallowed
        raise InvalidMessage(f"not a valid {cls.__name__}: {_first_error(exc)}") from None
    check_bounds(value)
    return value


def check_bounds(value: Any) -> None:
    """InvalidMessage unless a task's or result's fields are within the contract's bounds.

    Their fields come off a topic: a ``task_id`` is the 32 hex digits :func:`make_task_id`
    gives, a ``trace_id`` at most :data:`MAX_TRACE_ID` characters, and a result's numbers are
    ones an HTTP exchange and the retry budget can produce (and the inventory can store).
    """
    if isinstance(value, FailedDownload):
        check_bounds(value.task)
        return
    if not isinstance(value, DownloadTask | DownloadResult):
        return
    name = type(value).__name__
    if not _TASK_ID.fullmatch(value.task_id):
        raise InvalidMessage(f"not a valid {name}: task_id must be 32 lowercase hex digits")
    if not value.trace_id or len(value.trace_id) > MAX_TRACE_ID:
        raise InvalidMessage(f"not a valid {name}: trace_id must be 1 to {MAX_TRACE_ID} characters")
    if isinstance(value, DownloadTask):
        return
    if value.http_status is not None and not 100 <= value.http_status <= 599:
        raise InvalidMessage(f"not a valid {name}: http_status {value.http_status} is not 100 to 599")
    if not 1 <= value.attempt <= MAX_RETRY_COUNT:
        raise InvalidMessage(f"not a valid {name}: attempt must be 1 to {MAX_RETRY_COUNT}")
    if value.bytes is not None and not 0 <= value.bytes < MAX_BYTES:
        raise InvalidMessage(f"not a valid {name}: bytes must be 0 to 2**63 - 1")


def _first_error(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:
        return _first_error(inner[0])
    return f"{type(exc).__name__}: {exc}"


@overload
def _optional_str(obj: dict[str, Any], name: str, default: str, limit: int = 1024) -> str: ...
@overload
def _optional_str(obj: dict[str, Any], name: str, default: None = None, limit: int = 1024) -> str | None: ...
def _optional_str(obj: dict[str, Any], name: str, default: str | None = None, limit: int = 1024) -> str | None:
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidMessage(f"{name} is longer than {limit} characters")
    return value


def _required_str(obj: dict[str, Any], name: str, limit: int = 1024) -> str:
    value = obj.get(name)
    if value is None:
        raise InvalidMessage(f"{name} is required")
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise InvalidMessage(f"{name} is longer than {limit} characters")
    return value


def _attachments(obj: dict[str, Any]) -> tuple[str, ...]:
    raw = obj.get("attachments")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidMessage("attachments must be a list of URL strings")
    for url in raw:
        if not isinstance(url, str) or not url:
            raise InvalidMessage("attachments must be a list of URL strings")
    if len(raw) < 2:
        return tuple(raw)
    return tuple(dict.fromkeys(raw))  # duplicates collapse, order kept


def parse_event(data: bytes | None) -> EventMessage:
    """The one validator for input events."""
    if data is None:
        raise InvalidMessage("empty message (no value)")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"not a JSON object but {type(obj).__name__}")
    event_type = _required_str(obj, "event_type")
    payload = obj.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidMessage("payload must be an object")
    trace_id = _required_str(obj, "trace_id", limit=MAX_TRACE_ID)
    timestamp = obj.get("timestamp", _ABSENT)
    when = _missing("timestamp") if timestamp is _ABSENT else parse_ts(timestamp)
    subtype = _optional_str(obj, "event_subtype")
    return EventMessage(
        trace_id=trace_id,
        event_type=event_type,
        timestamp=when,
        event_subtype=event_type.rsplit(".", 1)[-1] if subtype is None else subtype,
        source_system=_optional_str(obj, "source_system", "unknown"),
        assignment_id=_optional_str(obj, "assignment_id"),
        estimate_version=_optional_str(obj, "estimate_version"),
        attachments=_attachments(obj),
    )


_ABSENT = object()


def _missing(name: str) -> Any:
    raise InvalidMessage(f"{name} is required")


def result_for(
    task: DownloadTask,
    status: str,
    *,
    started: float,
    finished: float,
    http_status: int | None = None,
    bytes: int | None = None,
    sha256: str | None = None,
    content_type: str | None = None,
    file_type: str | None = None,
    error: ErrorInfo | None = None,
    blob_path: str | None = None,
) -> DownloadResult:
    return DownloadResult(
        task_id=task.task_id,
        trace_id=task.trace_id,
        attachment_url=task.attachment_url,
        blob_path=blob_path or task.blob_path,  # where it was stored, when that is known
        status=status,
        attempt=task.retry_count + 1,
        completed_at=utcnow(),
        duration_ms=max(0, int((finished - started) * 1000)),
        http_status=http_status,
        bytes=bytes,
        sha256=sha256,
        content_type=content_type,
        file_type=file_type,
        error_category=error.category if error else None,
        error_message=error.message if error else None,
    )


def evolve(value: Any, **changes: Any) -> Any:
    return attrs.evolve(value, **changes)
