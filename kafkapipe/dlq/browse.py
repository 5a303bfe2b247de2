"""``list`` and ``show``: reading dead letters for people, without changing anything."""

from __future__ import annotations

import argparse
import re
from typing import TextIO

from kafkapipe.config import Config
from kafkapipe.dlq import render
from kafkapipe.dlq.entries import DeadLetter, selector
from kafkapipe.dlq.errors import EXIT_FAILURE, EXIT_OK, UsageError
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.replaylog import ReplayMark, mark_for, read_marks
from kafkapipe.dlq.selection import Selection, newest_first, parse_since

_COORDINATE = re.compile(r"^(\d+):(\d+)$")
__all__ = ["cmd_list", "cmd_show", "dlq_topic", "parse_since"]


def dlq_topic(args: argparse.Namespace, config: Config) -> str:
    """``--events``: the events DLQ (ingest's raw dead letters); else the downloads DLQ."""
    return config.topics.events_dlq if getattr(args, "events", False) else config.topics.dlq


def cmd_list(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    selection = Selection.from_args(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    topic = dlq_topic(args, config)
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(topic)
        marks = read_marks(reader) if topic == config.topics.dlq else {}
        entries = newest_first(reader, topic, selection, include_acked=args.all)[: args.limit]
    if not args.json:
        out.write(render.table_header() + "\n")
    for entry in entries:
        _write_entry(args, topic, entry, mark_for(entry, marks), out)
    scope = "all entries" if args.all else "entries not yet acknowledged; --all shows every entry"
    err.write(f"{len(entries)} dead letter(s) shown, newest first ({scope})\n")
    return EXIT_OK


def _write_entry(args: argparse.Namespace, topic: str, entry: DeadLetter, mark: ReplayMark | None, out: TextIO) -> None:
    if args.json:
        out.write(render.json_line(render.summary(entry, mark, topic, args.reveal_url)) + "\n")
    else:
        out.write(render.table_row(entry, mark) + "\n")


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    coordinate = _COORDINATE.match(args.ref)
    topic = dlq_topic(args, config)
    with Reader(config, args.timeout) as reader:
        marks = read_marks(reader) if topic == config.topics.dlq else {}
        if coordinate:
            found = reader.dead_letter_at(int(coordinate.group(1)), int(coordinate.group(2)), topic)
            entries = [found] if found is not None else []
        else:
            entries = list(filter(selector(task_ids=[args.ref]), reader.dead_letters(args.all, topic)))
    if not entries:
        hint = "" if coordinate or args.all else " among unacknowledged entries (--all searches every entry)"
        err.write(f"kafkapipe dlq show: no dead letter {args.ref}{hint}\n")
        return EXIT_FAILURE
    for entry in entries:
        doc = render.show_doc(entry, mark_for(entry, marks), topic, args.reveal_url)
        out.write(render.json_document(doc) + "\n")
    return EXIT_OK
