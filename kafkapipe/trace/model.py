"""One attachment of a claim as ``trace`` reports it: its attempts and where it is now.

The inventory keeps only the latest outcome per task, the retry topics the tasks still waiting,
the DLQ the ones that gave up; each seen record becomes an :class:`Attempt` and the latest one
decides the :class:`Attachment`'s state. Every text here is already without query strings and
credentials (built with :func:`kafkapipe.log.redact_url` / :func:`kafkapipe.log.scrub`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from attrs import field, frozen

from kafkapipe.messages import STATUS_SUCCESS, format_ts

# What a record says happened, and how strongly it says where the task is now: at equal times a
# topic record (it names the place) beats the inventory row written with it.
SOURCE_INVENTORY, SOURCE_RETRY, SOURCE_DLQ = "inventory", "retry", "dlq"
_RANK = {SOURCE_INVENTORY: 0, SOURCE_RETRY: 1, SOURCE_DLQ: 2}
_EPOCH = datetime.min.replace(tzinfo=UTC)

STATE_STORED = "stored"
STATE_WAITING = "waiting"  # on a retry topic, due later
STATE_DUE = "due"  # on a retry topic, due already: the delay stage moves it to pending
STATE_DEAD = "dead-lettered"
STATE_FAILED = "failed"  # the inventory says so; its DLQ entry was not found
STATE_RETRYING = "retrying"  # the inventory says so; no retry record seen in the window


@frozen
class Attempt:
    attempt: int | None
    outcome: str
    at: datetime | None
    source: str
    where: str | None = None
    category: str | None = None
    error: str | None = None
    due_at: datetime | None = None

    def order(self) -> tuple:
        return (self.at or _EPOCH, _RANK[self.source])


@frozen
class Attachment:
    task_id: str
    url: str | None
    blob_path: str | None
    attempts: tuple[Attempt, ...] = field(converter=lambda a: tuple(sorted(a, key=Attempt.order)))

    def now(self, at: datetime) -> tuple[str, str | None, datetime | None]:
        """(state, where, due time) from the latest record; a success stays a success."""
        stored = [a for a in self.attempts if a.outcome == STATUS_SUCCESS]
        if stored:
            return STATE_STORED, stored[-1].where or self.blob_path, None
        last = self.attempts[-1]
        if last.source == SOURCE_RETRY:
            due = last.due_at
            return (STATE_WAITING if due is None or due > at else STATE_DUE), last.where, due
        if last.source == SOURCE_DLQ:
            return STATE_DEAD, last.where, None
        return (STATE_FAILED if last.outcome == "failed_permanent" else STATE_RETRYING), None, None


@frozen
class EventDeadLetter:
    """An event of the claim that ingest could not turn into tasks."""

    where: str
    at: datetime | None
    error: str


@frozen
class Trace:
    trace_id: str
    attachments: tuple[Attachment, ...]
    event_dead_letters: tuple[EventDeadLetter, ...]
    notes: tuple[str, ...]  # what could not be searched, and the retry window

    @property
    def empty(self) -> bool:
        return not self.attachments and not self.event_dead_letters

    def as_dict(self, at: datetime) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "attachments": [_attachment_doc(a, at) for a in self.attachments],
            "event_dead_letters": [_plain(attrs.asdict(e)) for e in self.event_dead_letters],
            "notes": list(self.notes),
        }


def _attachment_doc(attachment: Attachment, at: datetime) -> dict[str, Any]:
    state, where, due = attachment.now(at)
    return {
        "task_id": attachment.task_id,
        "url": attachment.url,
        "blob_path": attachment.blob_path,
        "state": state,
        "where": where,
        "due_at": format_ts(due) if due else None,
        "attempts": [_plain(attrs.asdict(a)) for a in attachment.attempts],
    }


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: format_ts(v) if isinstance(v, datetime) else v for k, v in doc.items()}
