"""``stats``: how big each DLQ is and what it holds, by category, host, stage and age.

Both DLQs unless ``--events`` or ``--downloads`` narrows it; unacknowledged entries unless
``--all``; the same filters as ``list``. Age is from the dead letter's write time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime
from typing import Any, TextIO

from kafkapipe.config import Config
from kafkapipe.dlq.entries import DeadLetter
from kafkapipe.dlq.errors import EXIT_OK
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.selection import Selection, newest_first
from kafkapipe.messages import format_ts, utcnow
from kafkapipe.printable import json_text, printable

# Upper bounds in seconds; an entry older than the last is "older".
AGES = ((3600, "<1h"), (6 * 3600, "1h-6h"), (86400, "6h-24h"), (7 * 86400, "1d-7d"))
TOP = 10


def age_bucket(entry: DeadLetter, now: datetime) -> str:
    at = entry.timestamp or entry.failed_at
    if at is None:
        return "unknown"
    seconds = (now - at).total_seconds()
    return next((name for bound, name in AGES if seconds < bound), ">7d")


def stats_of(topic: str, entries: list[DeadLetter], now: datetime) -> dict[str, Any]:
    oldest = entries[-1] if entries else None
    return {
        "topic": topic,
        "entries": len(entries),
        "by_category": dict(Counter(e.category for e in entries).most_common()),
        "by_host": dict(Counter(e.host or "-" for e in entries).most_common(TOP)),
        "by_stage": dict(Counter(e.stage or "-" for e in entries).most_common()),
        "by_age": {name: n for name, n in Counter(age_bucket(e, now) for e in entries).items()},
        "oldest": None if oldest is None else {
            "coordinate": oldest.coordinate,
            "task_id": oldest.task_id,
            "trace_id": oldest.trace_id,
            "written_at": format_ts(oldest.timestamp) if oldest.timestamp else None,
        },
    }


def cmd_stats(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    topics = [config.topics.dlq, config.topics.events_dlq]
    if args.events:
        topics = [config.topics.events_dlq]
    elif args.downloads:
        topics = [config.topics.dlq]
    selection, now = Selection.from_args(args), utcnow()
    docs = []
    with Reader(config, args.timeout) as reader:
        for topic in topics:
            if reader.partitions(topic) is None:
                docs.append({"topic": topic, "missing": True})
                continue
            docs.append(stats_of(topic, newest_first(reader, topic, selection, args.all), now))
    if args.json:
        out.write(json_text({"dlqs": docs, "acknowledged_included": args.all}, indent=2) + "\n")
    else:
        out.write("\n\n".join(_text(doc) for doc in docs) + "\n")
        if not args.all:
            err.write("unacknowledged entries only; --all counts every entry\n")
    return EXIT_OK


def _text(doc: dict[str, Any]) -> str:
    if doc.get("missing"):
        return f"{doc['topic']}: topic does not exist"
    lines = [f"{doc['topic']}: {doc['entries']} entries"]
    for title in ("by_category", "by_host", "by_stage", "by_age"):
        counts = ", ".join(f"{printable(k)}={v}" for k, v in doc[title].items())
        lines.append(f"  {title[3:]:<9} {counts or '-'}")
    oldest = doc["oldest"]
    if oldest:
        lines.append(
            f"  oldest    {oldest['coordinate']} {oldest['written_at'] or '-'} "
            f"task {printable(oldest['task_id'] or '-')} trace {printable(oldest['trace_id'] or '-')}"
        )
    return "\n".join(lines)
