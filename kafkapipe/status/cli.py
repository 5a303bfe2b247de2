"""``kafkapipe status [--json] [--watch SECONDS]``. Exit 0 when read, 1 when the broker cannot be read.

The supervisor being down is reported, not a failure: the broker's view is still worth having.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TextIO

from confluent_kafka import KafkaException

from kafkapipe.config import Config
from kafkapipe.dlq.errors import DlqError
from kafkapipe.kafka.describe import describe
from kafkapipe.messages import utcnow
from kafkapipe.status import render
from kafkapipe.status.backlog import dlq_sizes, stages
from kafkapipe.status.scrape import scrape

EXIT_OK, EXIT_FAILURE = 0, 1
CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub: argparse._SubParsersAction, with_config: Callable) -> None:
    status = with_config(sub.add_parser("status", help="workers, backlog, DLQ sizes, circuits and holds"))
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                        help="repeat every SECONDS (default 5) until interrupted")
    status.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up on the broker or the supervisor after this long (default 10)")


def run(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    while True:
        code = _once(args, config, out, err)
        if not args.watch:
            return code
        out.flush()
        time.sleep(args.watch)


def _once(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    supervisor = scrape(config.metrics.bind, args.timeout)
    try:
        views, dlqs = stages(config, args.timeout), dlq_sizes(config, args.timeout)
    except DlqError as exc:
        err.write(f"kafkapipe status: reading the broker {config.kafka.bootstrap_servers}: {exc}\n")
        return EXIT_FAILURE
    except KafkaException as exc:
        err.write(f"kafkapipe status: {describe(exc, config.kafka.bootstrap_servers)}\n")
        return EXIT_FAILURE
    if args.json:
        out.write(render.as_json(supervisor, views, dlqs) + "\n")
    else:
        if args.watch and out.isatty():
            out.write(CLEAR)
        out.write(render.as_text(supervisor, views, dlqs, utcnow()) + "\n")
    return EXIT_OK

