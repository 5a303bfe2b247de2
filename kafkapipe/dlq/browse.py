"""``list`` and ``show``: reading dead letters for people, without changing anything."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta
from typing import TextIO

from kafkapipe.config import Config, parse_duration
from kafkapipe.dlq import render
from kafkapipe.dlq.entries import DeadLetter, selector
from kafkapipe.dlq.errors import EXIT_FAILURE, EXIT_OK, UsageError
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.replaylog import ReplayMark, mark_for, read_marks
from kafkapipe.messages import InvalidMessage, parse_ts, utcnow

_COORDINATE = re.compile(r"^(\d+):(\d+)$")


def cmd_list(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    selected = selector(category=args.category, since=_parse_since(args.since))
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    shown = 0
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(config.topics.dlq)
        marks = read_marks(reader)
        if not args.json:
            out.write(render.table_header() + "\n")
        for entry in filter(selected, reader.dead_letters(include_acked=args.all)):
            _write_entry(args, config, entry, mark_for(entry, marks), out)
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    scope = "all entries" if args.all else "entries not yet acknowledged; --all shows every entry"
    err.write(f"{shown} dead letter(s) shown ({scope})\n")
    return EXIT_OK


def _write_entry(
    args: argparse.Namespace, config: Config, entry: DeadLetter, mark: ReplayMark | None, out: TextIO
) -> None:
    if args.json:
        doc = render.summary(entry, mark, config.topics.dlq, args.reveal_url)
        out.write(render.json_line(doc) + "\n")
    else:
        out.write(render.table_row(entry, mark) + "\n")


def _parse_since(text: str | None) -> datetime | None:
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


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    coordinate = _COORDINATE.match(args.ref)
    with Reader(config, args.timeout) as reader:
        marks = read_marks(reader)
        if coordinate:
            found = reader.dead_letter_at(int(coordinate.group(1)), int(coordinate.group(2)))
            entries = [found] if found is not None else []
        else:
            entries = list(filter(selector(task_ids=[args.ref]), reader.dead_letters(include_acked=args.all)))
    if not entries:
        hint = "" if coordinate or args.all else " among unacknowledged entries (--all searches every entry)"
        err.write(f"kafkapipe dlq show: no dead letter {args.ref}{hint}\n")
        return EXIT_FAILURE
    for entry in entries:
        doc = render.show_doc(entry, mark_for(entry, marks), config.topics.dlq, args.reveal_url)
        out.write(render.json_document(doc) + "\n")
    return EXIT_OK
