"""What people see: the ``list`` table and JSON lines, the ``show`` document, the counts line.

Attachment URLs are shown without their query string (presigned URLs carry
credentials) unless ``--reveal-url``. Every string a dead letter carries is hostile: the
table passes it through :func:`kafkapipe.printable.printable` and the JSON outputs through
:func:`kafkapipe.printable.json_text`, so no control, bidi or zero-width character reaches a
terminal raw.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from kafkapipe.dlq.entries import DeadLetter
from kafkapipe.dlq.replaylog import ReplayMark
from kafkapipe.log import redact_url
from kafkapipe.messages import format_ts
from kafkapipe.printable import json_text, printable

MESSAGE_WIDTH = 50
_URL = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)
TRACE_WIDTH = 24
_TABLE = "{:<16} {:<32} {:<" + str(TRACE_WIDTH) + "} {:<12} {:<" + str(MESSAGE_WIDTH) + "} {:<29} {}"


def table_header() -> str:
    return _TABLE.format(
        "PARTITION:OFFSET", "TASK_ID", "TRACE_ID", "CATEGORY", "MESSAGE", "FAILED_AT", "REPLAYED_AT"
    )


def table_row(entry: DeadLetter, mark: ReplayMark | None) -> str:
    return _TABLE.format(
        entry.coordinate,
        _clean(entry.task_id or "-"),
        _clean(entry.trace_id or "-", TRACE_WIDTH),
        _clean(entry.category),
        _clean(redact(entry.message), MESSAGE_WIDTH),
        _ts(entry.failed_at),
        _clean(mark.replayed_at) if mark else "",
    ).rstrip()


def summary(entry: DeadLetter, mark: ReplayMark | None, dlq_topic: str, reveal: bool) -> dict[str, Any]:
    """One ``list --json`` line."""
    doc: dict[str, Any] = {
        "topic": dlq_topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "task_id": entry.task_id,
        "trace_id": entry.trace_id,
        "category": entry.category,
        "message": entry.message if reveal else redact(entry.message),
        "failed_at": _ts(entry.failed_at) or None,
        "replayed_at": mark.replayed_at if mark else None,
    }
    if entry.failed is not None:
        task = entry.failed.task
        doc.update(
            trace_id=task.trace_id,
            attachment_url=task.attachment_url if reveal else redact_url(task.attachment_url),
            attempts=entry.failed.attempts,
            stage=entry.failed.stage,
        )
    return doc


def show_doc(entry: DeadLetter, mark: ReplayMark | None, dlq_topic: str, reveal: bool) -> dict[str, Any]:
    """The whole record for ``show``: where it is, its headers, its value, and whether it was replayed."""
    value = _json_or_none(entry.value)
    doc: dict[str, Any] = {
        "coordinate": f"{dlq_topic}:{entry.partition}:{entry.offset}",
        "timestamp": _ts(entry.timestamp) or None,
        "key": entry.key,
        "headers": entry.headers,
        "replayed": None
        if mark is None
        else {"replayed_at": mark.replayed_at, "user": mark.user, "pending": mark.pending},
        "value": value,
    }
    if entry.failed is None:
        doc["error"] = entry.error
        if value is None and entry.value is not None:
            doc["raw"] = entry.value[:4096].decode("utf-8", "replace")
    return doc if reveal else redact(doc)


def json_line(doc: dict[str, Any]) -> str:
    """One ``list --json`` line."""
    return json_text(doc)


def json_document(doc: dict[str, Any]) -> str:
    """The ``show`` output."""
    return json_text(doc, indent=2)


def counts_line(counts: dict[str, int]) -> str:
    return " ".join(f"{name}={value}" for name, value in counts.items())


def redact(node: Any) -> Any:
    """Every URL inside ``node`` without its query string: presigned URLs carry credentials."""
    if isinstance(node, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), node)
    if isinstance(node, dict):
        return {k: redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def _json_or_none(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _clean(text: str, width: int | None = None) -> str:
    text = printable(text.strip())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _ts(value: datetime | None) -> str:
    return format_ts(value) if value is not None else ""
