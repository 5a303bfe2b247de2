"""``ack``: move the review group's committed offset, the operator's "reviewed up to here" mark.

What to acknowledge: ``P:O`` as ``list`` prints it (one or more; up to and including that
offset), ``--partition P --offset O``, ``--all``, or the filters of ``list``. A committed offset
marks a prefix of a partition, so a selection acknowledges, per partition, the leading unacknowledged
entries that all match it and stops at the first that does not (which is said). The mark only
moves forwards: an ``ack`` below it changes nothing and says so.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, TextIO

from kafkapipe.config import Config
from kafkapipe.dlq.audit import audit, check_audit_log
from kafkapipe.dlq.entries import DeadLetter, decode, selector
from kafkapipe.dlq.errors import EXIT_OK, UsageError
from kafkapipe.dlq.reading import Reader, review_group
from kafkapipe.dlq.replaylog import ReplayMark, mark_for
from kafkapipe.dlq.selection import Selection
from kafkapipe.kafka.clients import offset_of

_COORDINATE = re.compile(r"^(\d+):(\d+)$")


def cmd_ack(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    selection = _check_args(args)
    topic = config.topics.events_dlq if args.events else config.topics.dlq
    check_audit_log(config)
    with Reader(config, args.timeout) as reader:
        parts = reader.require_partitions(topic)
        if selection is not None:
            targets = _prefix_targets(reader, topic, _matches(selection), out)
        else:
            targets = _targets(reader, topic, args, parts)
        moves, unchanged = _plan(targets, reader.committed(topic, sorted(targets)))
        if moves:
            reader.commit(topic, moves)
    _write_outcome(config, topic, moves, unchanged, out)
    fields: dict[str, Any] = {
        "committed": {str(p): o for p, o in moves.items()},
        "unchanged": {str(p): o for p, o in unchanged.items()},
        "counts": {"moved": len(moves), "unchanged": len(unchanged)},
        "acked_topic": topic,
    }
    if args.refs:
        fields.update(refs=args.refs)
    elif args.partition is not None:
        fields.update(partition=args.partition, offset=args.offset)
    elif selection is not None:
        fields.update(selection.describe())
    audit("ack", config, all_partitions=args.all, **fields)
    return EXIT_OK


def acknowledge_prefix(reader: Reader, topic: str, marks: dict[str, ReplayMark], out: TextIO) -> dict[int, int]:
    """``replay --ack``: past every leading unacknowledged entry that has been replayed; what was committed."""
    targets = _prefix_targets(reader, topic, lambda e: mark_for(e, marks) is not None, out)
    moves, _ = _plan(targets, reader.committed(topic, sorted(targets)))
    if moves:
        reader.commit(topic, moves)
    _write_outcome(reader.config, topic, moves, {}, out)
    return moves


def _check_args(args: argparse.Namespace) -> Selection | None:
    """The filters given, if that is how entries are chosen; UsageError unless exactly one way is given."""
    selection = Selection.from_args(args)
    ways = [bool(args.refs), args.partition is not None or args.offset is not None, args.all,
            bool(selection.describe())]
    if sum(ways) != 1:
        raise UsageError("give P:O (as list prints it), --partition P --offset O, --all, or list's filters")
    for ref in args.refs:
        if not _COORDINATE.match(ref):
            raise UsageError(f"{ref!r} is not PARTITION:OFFSET")
    if ways[1] and (args.partition is None or args.offset is None or args.offset < 0):
        raise UsageError("--partition and --offset (>= 0) go together")
    return selection if ways[3] else None


def _matches(selection: Selection) -> Callable[[DeadLetter], bool]:
    return selector(task_ids=selection.task_ids or None, category=selection.category, since=selection.since,
                    trace_id=selection.trace_id, host=selection.host)


def _prefix_targets(
    reader: Reader, topic: str, matches: Callable[[DeadLetter], bool], out: TextIO
) -> dict[int, int]:
    """Per partition, the offset of its first unacknowledged entry that does not match (else its end)."""
    event = topic == reader.config.topics.events_dlq
    targets: dict[int, int] = {}
    for partition, start, end in reader.ranges(topic, include_acked=False):
        target = end
        for msg in reader.scan(topic, partition, start, end):
            if not matches(decode(msg, event)):
                target = offset_of(msg)
                out.write(f"{topic}[{partition}]: stopping at {partition}:{target}, which is not selected\n")
                break
        if target > start:
            targets[partition] = target
    return targets


def _targets(reader: Reader, topic: str, args: argparse.Namespace, parts: list[int]) -> dict[int, int]:
    """The offset to commit per partition: one past the acknowledged offset, or the current end."""
    if args.all:
        return {p: reader.watermarks(topic, p)[1] for p in parts}
    wanted: dict[int, int] = {}
    pairs = [tuple(map(int, ref.split(":"))) for ref in args.refs] or [(args.partition, args.offset)]
    for partition, offset in pairs:
        if partition not in parts:
            raise UsageError(f"{topic} has no partition {partition} (partitions: 0..{len(parts) - 1})")
        high = reader.watermarks(topic, partition)[1]
        if offset >= high:
            raise UsageError(f"{topic}[{partition}] has no offset {offset} (next offset is {high})")
        wanted[partition] = max(wanted.get(partition, 0), offset + 1)
    return wanted


def _plan(targets: dict[int, int], committed: dict[int, int | None]) -> tuple[dict[int, int], dict[int, int]]:
    """Partitions to move forwards, and those already at or past their target (never moved back)."""
    moves: dict[int, int] = {}
    unchanged: dict[int, int] = {}
    for partition, target in sorted(targets.items()):
        current = committed.get(partition)
        if current is not None and current >= target:
            unchanged[partition] = current
        elif target > 0:
            moves[partition] = target
    return moves, unchanged


def _write_outcome(config: Config, topic: str, moves: dict[int, int], unchanged: dict[int, int], out: TextIO) -> None:
    for partition, offset in moves.items():
        out.write(
            f"acknowledged {topic}[{partition}] up to offset {offset - 1} (review group "
            f"{review_group(config)} now at {offset})\n"
        )
    for partition, current in unchanged.items():
        out.write(
            f"{topic}[{partition}] is already acknowledged up to offset {current - 1}; ack never moves backwards\n"
        )
