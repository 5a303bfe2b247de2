"""Gathering one claim's records: the inventory (``by_trace``), the retry topics, both DLQs.

Topics are read with the DLQ tool's bounded, assign-only :class:`~kafkapipe.dlq.reading.Reader`
and matched by the ``trace_id`` header every stage writes (docs/contract.md §2). The retry topics are
read only from ``now - window`` on: a retry record older than its longest delay has been moved
on already. Both DLQs are read whole, acknowledged entries included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from kafkapipe.config import Config
from kafkapipe.dlq.entries import decode
from kafkapipe.dlq.reading import Reader
from kafkapipe.inventory import InventoryRow, InventoryUnavailable, open_inventory
from kafkapipe.kafka.clients import header_map
from kafkapipe.log import redact_url, scrub
from kafkapipe.messages import DownloadTask, InvalidMessage, loads
from kafkapipe.trace.model import (
    SOURCE_DLQ,
    SOURCE_INVENTORY,
    SOURCE_RETRY,
    Attachment,
    Attempt,
    EventDeadLetter,
    Trace,
)


def default_window(config: Config) -> float:
    """Twice the longest retry delay: every record still waiting was written within it."""
    return 2 * max(config.topics.retry_delay_seconds(i) for i in range(len(config.topics.retry_delays)))


def collect(config: Config, trace_id: str, *, timeout: float, window: float) -> Trace:
    attempts: dict[str, list[Attempt]] = {}
    urls: dict[str, tuple[str | None, str | None]] = {}
    notes: list[str] = []
    for row in _inventory_rows(config, trace_id, notes):
        attempts.setdefault(row.task_id, []).append(_from_row(row))
        urls[row.task_id] = (row.attachment_url, row.blob_path)
    with Reader(config, timeout) as reader:
        since_ms = int((time.time() - window) * 1000)
        for topic in config.topics.retry_topics:
            for msg in _matching(reader.recent(topic, since_ms), trace_id):
                task = _task(msg)
                if task is not None:
                    attempts.setdefault(task.task_id, []).append(_from_retry(msg, task))
                    urls.setdefault(task.task_id, (redact_url(task.attachment_url), task.blob_path))
        notes.append(f"retry topics read from {_iso(since_ms)} on")
        for msg in _matching(reader.recent(config.topics.dlq, None), trace_id):
            entry = decode(msg)
            if entry.failed is not None:
                task = entry.failed.task
                attempts.setdefault(task.task_id, []).append(_from_dead_letter(config, entry))
                urls.setdefault(task.task_id, (redact_url(task.attachment_url), task.blob_path))
        event_msgs = _matching(reader.recent(config.topics.events_dlq, None), trace_id)
        events = [_event_dead_letter(config, m) for m in event_msgs]
    attachments = tuple(
        Attachment(task_id=tid, url=urls[tid][0], blob_path=urls[tid][1], attempts=found)
        for tid, found in sorted(attempts.items())
    )
    return Trace(trace_id, attachments, tuple(events), tuple(notes))


def _inventory_rows(config: Config, trace_id: str, notes: list[str]) -> list[InventoryRow]:
    inv = config.inventory
    if inv.backend == "sqlite" and not Path(inv.path).exists():
        notes.append(f"no inventory at {inv.path}")
        return []
    try:
        inventory = open_inventory(inv)
    except InventoryUnavailable as exc:
        notes.append(f"inventory unavailable: {scrub(str(exc))}")
        return []
    try:
        return inventory.by_trace(trace_id)
    except InventoryUnavailable as exc:
        notes.append(f"inventory unavailable: {scrub(str(exc))}")
        return []
    finally:
        inventory.close()


def _matching(messages: Iterator[Message], trace_id: str) -> Iterator[Message]:
    for msg in messages:
        if header_map(msg.headers()).get("trace_id") == trace_id:
            yield msg


def _task(msg: Message) -> DownloadTask | None:
    try:
        return loads(msg.value() or b"", DownloadTask)
    except InvalidMessage:
        return None


def _timestamp(msg: Message) -> datetime | None:
    kind, stamp = msg.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE or stamp < 0 else datetime.fromtimestamp(stamp / 1000, UTC)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _from_row(row: InventoryRow) -> Attempt:
    return Attempt(
        attempt=row.attempt,
        outcome=row.status,
        at=row.completed_at,
        source=SOURCE_INVENTORY,
        where=row.blob_path if row.status == "success" else None,
        category=row.error_category,
        error=row.error_message,
    )


def _from_retry(msg: Message, task: DownloadTask) -> Attempt:
    error = task.last_error
    return Attempt(
        attempt=task.retry_count,
        outcome="retry scheduled",
        at=_timestamp(msg),
        source=SOURCE_RETRY,
        where=f"{msg.topic()}:{msg.partition()}:{msg.offset()}",
        category=error.category if error else None,
        error=scrub(error.message) if error else None,
        due_at=task.retry_at,
    )


def _from_dead_letter(config: Config, entry) -> Attempt:
    return Attempt(
        attempt=entry.failed.attempts,
        outcome="dead-lettered",
        at=entry.failed.failed_at,
        source=SOURCE_DLQ,
        where=f"{config.topics.dlq}:{entry.coordinate}",
        category=entry.category,
        error=scrub(entry.message),
    )


def _event_dead_letter(config: Config, msg: Message) -> EventDeadLetter:
    meta = header_map(msg.headers())
    return EventDeadLetter(
        where=f"{config.topics.events_dlq}:{msg.partition()}:{msg.offset()}",
        at=_timestamp(msg),
        error=scrub(meta.get("error-message", "")),
    )
