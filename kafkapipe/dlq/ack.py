"""``ack``: move the review group's committed offset, the operator's "reviewed up to here" mark.

The mark only moves forwards: an ``ack`` below it changes nothing and says so.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from kafkapipe.config import Config
from kafkapipe.dlq.audit import audit
from kafkapipe.dlq.errors import EXIT_OK, UsageError
from kafkapipe.dlq.reading import Reader, review_group


def cmd_ack(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    _check_args(args)
    topic = config.topics.dlq
    with Reader(config, args.timeout) as reader:
        parts = reader.require_partitions(topic)
        targets = _targets(reader, args, parts)
        moves, unchanged = _plan(targets, reader.committed(topic, sorted(targets)))
        if moves:
            reader.commit(topic, moves)
    _write_outcome(config, moves, unchanged, out)
    fields: dict[str, Any] = {
        "committed": {str(p): o for p, o in moves.items()},
        "unchanged": {str(p): o for p, o in unchanged.items()},
        "counts": {"moved": len(moves), "unchanged": len(unchanged)},
    }
    if not args.all:
        fields.update(partition=args.partition, offset=args.offset)
    audit("ack", config, all_partitions=args.all, **fields)
    return EXIT_OK


def _check_args(args: argparse.Namespace) -> None:
    if args.all == (args.partition is not None or args.offset is not None):
        raise UsageError("give either --partition P --offset O, or --all")
    if not args.all and (args.partition is None or args.offset is None or args.offset < 0):
        raise UsageError("--partition and --offset (>= 0) go together")


def _targets(reader: Reader, args: argparse.Namespace, parts: list[int]) -> dict[int, int]:
    """The offset to commit per partition: one past the acknowledged offset, or the current end."""
    topic = reader.config.topics.dlq
    if args.all:
        return {p: reader.watermarks(topic, p)[1] for p in parts}
    if args.partition not in parts:
        raise UsageError(f"{topic} has no partition {args.partition} (partitions: 0..{len(parts) - 1})")
    high = reader.watermarks(topic, args.partition)[1]
    if args.offset >= high:
        raise UsageError(f"{topic}[{args.partition}] has no offset {args.offset} (next offset is {high})")
    return {args.partition: args.offset + 1}


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


def _write_outcome(config: Config, moves: dict[int, int], unchanged: dict[int, int], out: TextIO) -> None:
    topic = config.topics.dlq
    for partition, offset in moves.items():
        out.write(
            f"acknowledged {topic}[{partition}] up to offset {offset - 1} (review group "
            f"{review_group(config)} now at {offset})\n"
        )
    for partition, current in unchanged.items():
        out.write(
            f"{topic}[{partition}] is already acknowledged up to offset {current - 1}; ack never moves backwards\n"
        )
