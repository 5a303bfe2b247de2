"""Dead letters as the tool sees them: one decoded DLQ record, and which ones a command selects."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import cast
from urllib.parse import urlsplit

from attrs import frozen
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from kafkapipe.kafka.clients import offset_of, partition_of
from kafkapipe.messages import FailedDownload, InvalidMessage, loads

UNDECODABLE = "undecodable"


@frozen
class DeadLetter:
    """One DLQ record; ``failed`` is None when it could not be decoded (``error`` says why)."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    headers: dict[str, str]
    value: bytes | None
    failed: FailedDownload | None
    error: str | None = None
    event: bool = False  # from the events DLQ: the original event's bytes, reasons in headers
    # As the record holds them, for a byte-for-byte replay: ``key`` and ``headers`` are for reading.
    raw_key: bytes | None = None
    raw_headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def coordinate(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def task_id(self) -> str | None:
        if self.failed is not None:
            return self.failed.task.task_id
        return self.key or self.headers.get("task_id")

    @property
    def replay_id(self) -> str | None:
        """What a replay sends once: the task, or for the events DLQ the event at this coordinate."""
        return self.coordinate if self.event else self.task_id

    @property
    def replayable(self) -> bool:
        return self.value is not None if self.event else self.failed is not None

    @property
    def truncated(self) -> bool:
        """Whether the value was cut to fit the dead-letter topic: replaying it would send the cut bytes."""
        return any(k == "truncated" and v == b"true" for k, v in self.raw_headers) or (
            self.headers.get("truncated") == "true"
        )

    @property
    def trace_id(self) -> str | None:
        if self.failed is not None:
            return self.failed.task.trace_id
        return self.headers.get("trace_id")

    @property
    def host(self) -> str | None:
        """The attachment URL's host, lower case; None for an entry that cannot be decoded."""
        if self.failed is None:
            return None
        try:
            return urlsplit(self.failed.task.attachment_url).hostname
        except ValueError:
            return None

    @property
    def stage(self) -> str | None:
        if self.event:
            return "ingest"
        return self.failed.stage if self.failed is not None else None

    @property
    def category(self) -> str:
        if self.event:
            return self.headers.get("error-category") or UNDECODABLE
        return self.failed.error_category if self.failed is not None else UNDECODABLE

    @property
    def message(self) -> str:
        """The failure; for a raw entry, the reason its stage gave (header) before our decode error."""
        if self.failed is not None:
            return self.failed.error_message
        return self.headers.get("error-message") or self.error or ""

    @property
    def timestamp(self) -> datetime | None:
        """When the record was written to the DLQ (its Kafka timestamp)."""
        if self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def failed_at(self) -> datetime | None:
        if self.failed is not None:
            return self.failed.failed_at
        return self.timestamp


def decode(msg: Message, event: bool = False) -> DeadLetter:
    """One record of the downloads DLQ, or with ``event`` of the events DLQ (kept as raw bytes)."""
    kind, stamp = msg.timestamp()
    key = msg.key()
    value = msg.value()
    raw = cast(list | None, msg.headers())  # a consumed message's headers are a list
    failed, error = None, None
    try:
        if value is None:
            raise InvalidMessage("empty message (no value)")
        if not event:
            failed = loads(value, FailedDownload)
    except InvalidMessage as exc:
        error = str(exc)
    return DeadLetter(
        partition=partition_of(msg)[1],
        offset=offset_of(msg),
        timestamp_ms=stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0 else None,
        key=key.decode("utf-8", "replace") if key is not None else None,
        headers=_header_map(raw),
        value=value,
        failed=failed,
        error=error,
        event=event,
        raw_key=key,
        raw_headers=tuple((k, v) for k, v in raw or []),
    )


def _header_map(raw: list | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in raw or [] if isinstance(v, bytes)}


def selector(
    *,
    task_ids: Iterable[str] | None = None,
    category: str | None = None,
    since: datetime | None = None,
    trace_id: str | None = None,
    host: str | None = None,
) -> Callable[[DeadLetter], bool]:
    """Entries of these tasks, category, claim and host, failed at or after ``since``; None means any."""
    wanted = set(task_ids) if task_ids else None
    host = host.lower() if host else None

    def selected(entry: DeadLetter) -> bool:
        if wanted is not None and entry.task_id not in wanted:
            return False
        if category is not None and entry.category != category:
            return False
        if trace_id is not None and entry.trace_id != trace_id:
            return False
        if host is not None and entry.host != host:
            return False
        return since is None or (entry.failed_at is not None and entry.failed_at >= since)

    return selected
