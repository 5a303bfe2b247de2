"""``kafkapipe trace TRACE_ID [--json]``. Exit 0 when something was found, 1 when nothing was (or on failure)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TextIO

from confluent_kafka import KafkaException

from kafkapipe.config import Config, parse_duration
from kafkapipe.dlq.errors import DlqError
from kafkapipe.kafka.describe import describe
from kafkapipe.messages import utcnow
from kafkapipe.printable import printable
from kafkapipe.trace import render
from kafkapipe.trace.collect import collect, default_window

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction, with_config: Callable) -> None:
    trace = with_config(sub.add_parser("trace", help="every attachment of one claim, and where each is now"))
    trace.add_argument("trace_id", metavar="TRACE_ID")
    trace.add_argument("--json", action="store_true", help="one JSON document")
    trace.add_argument("--retry-window", metavar="DURATION",
                       help="read retry topics this far back (default: twice the longest retry delay)")
    trace.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                       help="give up after this long without progress from the broker (default 30)")


def run(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    try:
        window = parse_duration(args.retry_window) if args.retry_window else default_window(config)
    except ValueError as exc:
        err.write(f"kafkapipe trace: --retry-window: {exc}\n")
        return EXIT_USAGE
    try:
        trace = collect(config, args.trace_id, timeout=args.timeout, window=window)
    except DlqError as exc:
        err.write(f"kafkapipe trace: {exc}\n")
        return EXIT_FAILURE
    except KafkaException as exc:
        err.write(f"kafkapipe trace: {describe(exc, config.kafka.bootstrap_servers)}\n")
        return EXIT_FAILURE
    now = utcnow()
    out.write((render.as_json(trace, now) if args.json else render.as_text(trace, now)) + "\n")
    if trace.empty:
        err.write(f"kafkapipe trace: nothing found for {printable(args.trace_id)}\n")
        return EXIT_FAILURE
    return EXIT_OK
