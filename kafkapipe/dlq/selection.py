"""Which dead letters a command means: the filters ``list``, ``stats``, ``replay`` and ``ack`` share.

``--category`` is checked against the real categories (:class:`kafkapipe.errors.ErrorCategory`,
plus ``undecodable``) so a misspelt one is an error, not an empty answer. ``--since`` (a duration
such as ``2h``, or RFC 3339) also moves each partition's start to the first record written at or
after it (``offsets_for_times``): a dead letter is written after it failed, so nothing it would
select lies before. Entries come back newest first, so ``--limit N`` means the newest N.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from attrs import frozen

from kafkapipe.config import parse_duration
from kafkapipe.dlq.entries import UNDECODABLE, DeadLetter, decode, selector
from kafkapipe.dlq.errors import UsageError
from kafkapipe.dlq.reading import Reader
from kafkapipe.errors import ErrorCategory
from kafkapipe.messages import InvalidMessage, parse_ts, utcnow

CATEGORIES = (*(c.value for c in ErrorCategory), UNDECODABLE)
_OLDEST = datetime.min.replace(tzinfo=UTC)


def category(text: str) -> str:
    if text not in CATEGORIES:
        raise argparse.ArgumentTypeError(f"unknown category {text!r}; one of: {', '.join(CATEGORIES)}")
    return text


def add_filters(parser: argparse.ArgumentParser, *, with_category: bool = True) -> None:
    if with_category:
        parser.add_argument("--category", type=category, metavar="CATEGORY",
                            help=f"only this error category ({', '.join(CATEGORIES)})")
    parser.add_argument("--since", metavar="DURATION|RFC3339",
                        help="failed at or after this time: a duration back from now (2h, 30m) or RFC 3339")
    parser.add_argument("--trace-id", metavar="ID", help="only this claim's dead letters")
    parser.add_argument("--host", metavar="HOST", help="only attachments from this host")


def parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return parse_ts(text, "--since")
    except InvalidMessage as exc:
        raise UsageError(f"{exc} (or give a duration like 2h)") from None


@frozen
class Selection:
    since: datetime | None = None
    category: str | None = None
    trace_id: str | None = None
    host: str | None = None
    task_ids: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Selection:
        return cls(
            since=parse_since(getattr(args, "since", None)),
            category=getattr(args, "category", None),
            trace_id=getattr(args, "trace_id", None),
            host=getattr(args, "host", None),
            task_ids=tuple(getattr(args, "task_ids", None) or ()),
        )

    def describe(self) -> dict[str, object]:
        """The filters given, for the plan and the audit line."""
        found = {
            "since": self.since.isoformat(timespec="seconds") if self.since else None,
            "category": self.category,
            "trace_id": self.trace_id,
            "host": self.host,
            "task_ids": list(self.task_ids) or None,
        }
        return {k: v for k, v in found.items() if v is not None}


def newest_first(reader: Reader, topic: str, selection: Selection, include_acked: bool) -> list[DeadLetter]:
    """The selected dead letters of ``topic``, newest first (DLQ write time, failure time, coordinate)."""
    selected = selector(
        task_ids=selection.task_ids or None, category=selection.category, since=selection.since,
        trace_id=selection.trace_id, host=selection.host,
    )
    event = topic == reader.config.topics.events_dlq
    found = [e for e in _read(reader, topic, selection.since, include_acked, event) if selected(e)]
    # Records written in the same millisecond (a batch) are ordered by when they failed.
    return sorted(
        found, key=lambda e: (e.timestamp or _OLDEST, e.failed_at or _OLDEST, e.partition, e.offset), reverse=True
    )


def _read(reader: Reader, topic: str, since: datetime | None, include_acked: bool, event: bool):
    ranges = reader.ranges(topic, include_acked)
    starts = {}
    if since is not None and ranges:
        starts = reader.offsets_at(topic, [p for p, _, _ in ranges], int(since.timestamp() * 1000))
    for partition, start, end in ranges:
        seek = starts.get(partition, start)
        begin = end if seek < 0 else max(start, seek)
        if begin < end:
            for msg in reader.scan(topic, partition, begin, end):
                yield decode(msg, event)
