"""``trace`` output: a block per attachment for people, one JSON document with ``--json``.

Everything shown came from events, servers and topics: it passes through
:func:`kafkapipe.printable.printable` (text) or :func:`kafkapipe.printable.json_text` (JSON).
"""

from __future__ import annotations

from datetime import datetime

from kafkapipe.messages import format_ts
from kafkapipe.printable import json_text, printable
from kafkapipe.trace.model import Attachment, Attempt, Trace

ERROR_WIDTH = 60


def as_json(trace: Trace, at: datetime) -> str:
    return json_text(trace.as_dict(at), indent=2)


def as_text(trace: Trace, at: datetime) -> str:
    lines = [f"trace {printable(trace.trace_id)}: {len(trace.attachments)} attachment(s)"]
    for attachment in trace.attachments:
        lines += ["", *_attachment(attachment, at)]
    for event in trace.event_dead_letters:
        lines += ["", f"event dead-lettered at {event.where} ({_ts(event.at)}): {_cut(event.error)}"]
    lines += ["", *(f"# {printable(note)}" for note in trace.notes)]
    return "\n".join(lines)


def _attachment(attachment: Attachment, at: datetime) -> list[str]:
    state, where, due = attachment.now(at)
    now = state + (f" {printable(where)}" if where else "") + (f" (due {_ts(due)})" if due else "")
    lines = [
        f"task {printable(attachment.task_id)}  {printable(attachment.url or '-')}",
        f"  now: {now}",
    ]
    lines += [f"  {_attempt(a)}" for a in attachment.attempts]
    return lines


def _attempt(attempt: Attempt) -> str:
    number = f"attempt {attempt.attempt}" if attempt.attempt is not None else "attempt ?"
    parts = [f"{number:<10}", f"{attempt.outcome:<16}", _ts(attempt.at), f"[{attempt.source}]"]
    if attempt.category:
        parts.append(printable(attempt.category))
    if attempt.error:
        parts.append(_cut(attempt.error))
    return " ".join(parts)


def _cut(text: str) -> str:
    text = printable(text.strip())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _ts(value: datetime | None) -> str:
    return format_ts(value) if value is not None else "-"
