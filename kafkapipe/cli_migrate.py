"""``kafkapipe migrate retry-queue`` (and the other cutover commands): argument parsing and exit status.

Exit status (``docs/contract.md`` §6): 0 done; 1 rows skipped, sends failed or the broker/source
failed; 2 usage or configuration (a bad ``--since``, a mapping column the source lacks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime

from kafkapipe.config import Config
from kafkapipe.messages import InvalidMessage, parse_ts
from kafkapipe.printable import printable
from kafkapipe.worker import EXIT_CONFIG, EXIT_FAILURE


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


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive count: {text!r}")
    return int(text)


def _timestamp(text: str) -> datetime:
    try:
        return parse_ts(text, "time")
    except InvalidMessage as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace, config: Config) -> int:
    from kafkapipe.dlq.errors import DlqError
    from kafkapipe.migrate import retryqueue
    from kafkapipe.migrate.migratelog import MigrateError
    from kafkapipe.migrate.source import SourceError

    try:
        return retryqueue.run(config, args.source, dry_run=args.dry_run, since=args.since, limit=args.limit)
    except SourceError as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG if "no column" in str(exc) else EXIT_FAILURE
    except (DlqError, MigrateError) as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
