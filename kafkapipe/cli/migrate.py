"""``kafkapipe migrate retry-queue``, ``compare``, ``offsets reset``: argument parsing and exit status.

Exit status (``docs/contract.md`` §6): 0 done; 1 rows skipped, sends failed or the broker/source
failed; 2 usage or configuration (a bad ``--since``, a mapping column the source lacks).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import datetime

from kafkapipe.config import STAGES, Config
from kafkapipe.messages import InvalidMessage, parse_ts
from kafkapipe.printable import printable
from kafkapipe.worker import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK


def add_parser(sub: argparse._SubParsersAction, with_config: Callable) -> None:
    migrate = sub.add_parser("migrate", help="move the legacy Delta pipeline's state into kafkapipe")
    actions = migrate.add_subparsers(dest="action", required=True)
    queue = with_config(actions.add_parser("retry-queue", help="legacy retry queue → pending / retry topics / DLQ"))
    queue.add_argument("--source", required=True, metavar="URI",
                       help="Delta table (path or abfss://…), or a .parquet, .csv or .jsonl file")
    queue.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    queue.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="send at most N tasks")
    queue.add_argument("--since", type=_timestamp, default=None, metavar="T",
                       help="only rows whose event time (created_at column) is at or after T (RFC 3339)")

    compare = with_config(sub.add_parser("compare", help="the legacy inventory against kafkapipe's, task by task"))
    compare.add_argument("--legacy", required=True, metavar="URI", help="legacy inventory (Delta, Parquet, CSV, JSONL)")
    compare.add_argument("--since", type=_timestamp, default=None, metavar="T", help="window start (RFC 3339)")
    compare.add_argument("--until", type=_timestamp, default=None, metavar="T", help="window end, exclusive")
    compare.add_argument("--format", choices=("table", "json", "csv"), default="table")
    compare.add_argument("--max-mismatch", type=_rate, default=0.0, metavar="R",
                         help="highest mismatch rate (0..1) that still exits 0; default 0")
    compare.add_argument("--show", type=_positive_int, default=10, metavar="N", help="examples per kind")

    offsets = sub.add_parser("offsets", help="consumer group offsets")
    reset = with_config(offsets.add_subparsers(dest="action", required=True).add_parser(
        "reset", help="move a stage's group to a time / the start / the end (plan; --execute applies)"))
    reset.add_argument("--stage", required=True, choices=STAGES)
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-datetime", type=_timestamp, metavar="T", help="first message at or after T (RFC 3339)")
    where.add_argument("--to-earliest", action="store_true")
    where.add_argument("--to-latest", action="store_true")
    reset.add_argument("--execute", action="store_true", help="apply the plan (refused while the group has members)")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive count: {text!r}")
    return int(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a rate between 0 and 1: {text!r}")
    return value


def _timestamp(text: str) -> datetime:
    try:
        return parse_ts(text, "time")
    except InvalidMessage as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_compare(args: argparse.Namespace, config: Config) -> int:
    from kafkapipe.inventory import InventoryUnavailable, open_inventory
    from kafkapipe.migrate import render
    from kafkapipe.migrate.compare import compare
    from kafkapipe.migrate.source import SourceError

    try:
        inventory = open_inventory(config.inventory)
        try:
            result = compare(inventory, args.legacy, config, since=args.since, until=args.until, show=args.show)
        finally:
            inventory.close()
    except (SourceError, InventoryUnavailable) as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    if args.format == "json":
        print(render.as_json(result, args.max_mismatch))
    elif args.format == "csv":
        render.write_csv(result, sys.stdout)
    else:
        render.write_table(result, args.max_mismatch, sys.stdout)
    return EXIT_OK if result.rate() <= args.max_mismatch else EXIT_FAILURE


def run_offsets(args: argparse.Namespace, config: Config) -> int:
    from confluent_kafka import KafkaException

    from kafkapipe.dlq.audit import AUDIT, user
    from kafkapipe.kafka import offsets_reset as reset
    from kafkapipe.kafka.clients import group_id

    target = reset.Target(when=args.to_datetime, earliest=args.to_earliest)
    group = group_id(config, args.stage)
    try:
        moves = reset.plan(config, args.stage, target)
        shown = "" if args.execute else " (plan; --execute applies)"
        print(f"group {printable(group)} → {target.describe()}{shown}")
        for m in moves:
            now = "-" if m.current is None else m.current
            print(f"  {printable(m.topic)}[{m.partition}] {now} → {m.new}")
        if not args.execute:
            members = reset.live_members(config, group)
            if members:
                print(f"note: the group has {len(members)} live member(s); --execute is refused until they stop")
            return EXIT_OK
        reset.apply(config, args.stage, moves)
    except (reset.ResetError, KafkaException) as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    if not AUDIT.isEnabledFor(logging.INFO):
        AUDIT.setLevel(logging.INFO)
    AUDIT.info("offsets reset by %s", user(), extra={
        "action": "offsets.reset", "user": user(), "group": group, "target": target.describe(),
        "moves": [f"{m.topic}[{m.partition}]:{m.current}->{m.new}" for m in moves][:1000]})
    print(f"applied: {len(moves)} partition(s) moved")
    return EXIT_OK


def run(args: argparse.Namespace, config: Config) -> int:
    from confluent_kafka import KafkaException

    from kafkapipe.dlq.errors import DlqError
    from kafkapipe.migrate import retryqueue
    from kafkapipe.migrate.migratelog import MigrateError
    from kafkapipe.migrate.source import SourceError

    try:
        return retryqueue.run(config, args.source, dry_run=args.dry_run, since=args.since, limit=args.limit)
    except SourceError as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG if "no column" in str(exc) else EXIT_FAILURE
    except (DlqError, MigrateError, KafkaException) as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
