"""One legacy retry-queue row → the DownloadTask it stands for, or the reason it cannot be one.

The task is built exactly as ingest builds one (``messages.make_task_id``, ``paths.blob_path``),
so a migrated task and the same attachment arriving as a fresh event are one task (docs/contract.md §2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from attrs import frozen

from kafkapipe.config import MigrateConfig
from kafkapipe.messages import DownloadTask, ErrorInfo, InvalidMessage, make_task_id, parse_ts, truncate
from kafkapipe.paths import blob_path

MAX_TRACE_ID = 256
MAX_URL = 8192
MAX_ERROR = 4096
DEFAULT_EVENT_TYPE = "legacy.migrated"


class BadRow(ValueError):
    """A row that cannot become a task; the text says why (no value of the row is trusted in it)."""


@frozen
class LegacyTask:
    row: int
    task: DownloadTask
    due: datetime | None  # None: due now


def required_columns(mapping: MigrateConfig) -> list[str]:
    return [mapping.trace_id, mapping.attachment_url, mapping.created_at]


def task_columns(mapping: MigrateConfig) -> list[str]:
    return [
        mapping.trace_id, mapping.attachment_url, mapping.retry_count, mapping.next_retry_at, mapping.last_error,
        mapping.created_at, mapping.event_type, mapping.source_system, mapping.legacy_id,
    ]


def to_task(number: int, row: dict[str, Any], mapping: MigrateConfig, created: datetime) -> LegacyTask:
    trace_id = text(row.get(mapping.trace_id), mapping.trace_id, MAX_TRACE_ID)
    url = text(row.get(mapping.attachment_url), mapping.attachment_url, MAX_URL)
    when = moment(row.get(mapping.created_at), mapping.created_at)
    if when is None:
        raise BadRow(f"{mapping.created_at} is empty")
    source_system = optional_text(row.get(mapping.source_system), mapping.source_system) or "unknown"
    event_type = optional_text(row.get(mapping.event_type), mapping.event_type) or DEFAULT_EVENT_TYPE
    task_id = make_task_id(trace_id, url)
    message = optional_text(row.get(mapping.last_error), mapping.last_error, None)
    legacy_id = row.get(mapping.legacy_id)
    task = DownloadTask(
        task_id=task_id,
        trace_id=trace_id,
        attachment_url=url,
        blob_path=blob_path(task_id, trace_id, url, source_system, when),
        event_type=event_type,
        event_subtype=event_type.rsplit(".", 1)[-1],
        source_system=source_system,
        original_timestamp=when,
        created_at=created,
        retry_count=count(row.get(mapping.retry_count), mapping.retry_count),
        last_error=ErrorInfo("transient", truncate(message, MAX_ERROR)) if message else None,
        metadata={"migrated_from": "legacy", **({"legacy_id": str(legacy_id)[:256]} if legacy_id is not None else {})},
    )
    return LegacyTask(number, task, moment(row.get(mapping.next_retry_at), mapping.next_retry_at))


def text(value: Any, column: str, limit: int = 1024) -> str:
    found = optional_text(value, column, limit)
    if not found:
        raise BadRow(f"{column} is empty")
    return found


def optional_text(value: Any, column: str, limit: int | None = 1024) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRow(f"{column} is not text but {type(value).__name__}")
    if "\x00" in value:
        raise BadRow(f"{column} holds a NUL character")
    if limit is not None and len(value) > limit:
        raise BadRow(f"{column} is longer than {limit} characters")
    return value.strip() or None


def count(value: Any, column: str) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1_000_000:
        raise BadRow(f"{column} is not a count of attempts")
    return value


def moment(value: Any, column: str) -> datetime | None:
    """A timestamp column: Arrow timestamps with a zone, or RFC 3339 text with an offset (docs/contract.md §1)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadRow(f"{column} has no time zone (a timestamp without one is ambiguous)")
        found = value
    elif isinstance(value, str):
        try:
            found = parse_ts(value.strip(), column)
        except InvalidMessage:
            raise BadRow(f"{column} is not an RFC 3339 timestamp with an offset") from None
    else:
        raise BadRow(f"{column} is not a timestamp but {type(value).__name__}")
    try:
        return found.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadRow(f"{column} is outside the range that converts to UTC") from None
