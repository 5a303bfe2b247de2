"""The argparse wiring of ``kafkapipe dlq`` and ``python -m kafkapipe.dlq``, and running a parsed command.

Output for people goes to stdout; errors to stderr. Exit status: 0, 1 for a
runtime failure, 2 for arguments that cannot work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import KafkaException

from kafkapipe import log as logmod
from kafkapipe.config import Config
from kafkapipe.dlq.ack import cmd_ack
from kafkapipe.dlq.browse import cmd_list, cmd_show
from kafkapipe.dlq.errors import EXIT_FAILURE, EXIT_USAGE, DlqError, UsageError
from kafkapipe.dlq.replay import cmd_replay
from kafkapipe.dlq.selection import add_filters
from kafkapipe.dlq.stats import cmd_stats
from kafkapipe.kafka.describe import describe

COMMANDS = {"list": cmd_list, "show": cmd_show, "stats": cmd_stats, "replay": cmd_replay, "ack": cmd_ack}

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _identity(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return parser


def add_parser(subparsers: Any, with_config: WithConfig = _identity) -> argparse.ArgumentParser:
    """Add ``dlq`` and its subcommands; ``with_config`` adds the caller's ``--config`` to each."""
    parser = subparsers.add_parser("dlq", help="inspect, replay and acknowledge download dead letters")
    add_subcommands(parser, with_config)
    return parser


def add_subcommands(parser: argparse.ArgumentParser, with_config: WithConfig = _identity) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long without progress from the broker (default 30)",
    )
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,stats,replay,ack}")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return with_config(sub.add_parser(name, parents=[common], help=help))

    _list_arguments(add("list", "list dead letters, newest first"))
    _show_arguments(add("show", "one dead letter in full"))
    _stats_arguments(add("stats", "counts by category, host, stage and age; the oldest entry"))
    _replay_arguments(add("replay", "send dead letters back (to pending; with --events to the events topic)"))
    _ack_arguments(add("ack", "mark dead letters as reviewed"))


def _events_flag(parser: argparse._ActionsContainer) -> None:
    """On a parser, or on a mutually exclusive group of one."""
    parser.add_argument("--events", action="store_true", help="the events DLQ (ingest's) instead of the downloads DLQ")


def _list_arguments(lst: argparse.ArgumentParser) -> None:
    add_filters(lst)
    _events_flag(lst)
    lst.add_argument("--limit", type=int, metavar="N", help="show the newest N entries")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.add_argument("--all", action="store_true", help="include acknowledged entries")
    lst.add_argument("--reveal-url", action="store_true", help="show attachment URLs with their query string")


def _show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("ref", metavar="TASK_ID|PARTITION:OFFSET")
    _events_flag(show)
    show.add_argument("--all", action="store_true", help="search acknowledged entries too (by task id)")
    show.add_argument("--reveal-url", action="store_true", help="show the attachment URL with its query string")


def _stats_arguments(stats: argparse.ArgumentParser) -> None:
    add_filters(stats)
    which = stats.add_mutually_exclusive_group()
    _events_flag(which)
    which.add_argument("--downloads", action="store_true", help="only the downloads DLQ")
    stats.add_argument("--json", action="store_true", help="one JSON document")
    stats.add_argument("--all", action="store_true", help="include acknowledged entries")


def _task_ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-id", dest="task_ids", action="extend", nargs="+", metavar="ID",
                        help="these tasks' dead letters")


def _replay_arguments(replay: argparse.ArgumentParser) -> None:
    _task_ids(replay)
    add_filters(replay)
    _events_flag(replay)
    replay.add_argument("--all-entries", action="store_true", help="every dead letter (no filter)")
    replay.add_argument("--limit", type=int, metavar="N", help="the newest N selected only")
    replay.add_argument("--rate", type=float, metavar="PER_SECOND", help="send at most this many a second")
    replay.add_argument("--all", action="store_true", help="include acknowledged entries")
    act = replay.add_mutually_exclusive_group()
    act.add_argument("--execute", action="store_true", help="send them (without it: print the plan, send nothing)")
    act.add_argument("--dry-run", action="store_true", help="print the plan, send nothing, do not ask")
    replay.add_argument("--ack", action="store_true",
                        help="then acknowledge every leading entry of a partition that is now replayed")


def _ack_arguments(ack: argparse.ArgumentParser) -> None:
    ack.add_argument("refs", nargs="*", metavar="P:O", help="up to and including these, as list prints them")
    ack.add_argument("--partition", type=int, metavar="P")
    ack.add_argument("--offset", type=int, metavar="O", help="acknowledge up to and including this offset")
    ack.add_argument("--all", action="store_true", help="acknowledge everything up to the current end")
    _task_ids(ack)
    add_filters(ack)
    _events_flag(ack)


def run(args: argparse.Namespace, config: Config, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the parsed ``dlq`` subcommand; returns the exit status (0, 1, or 2 for usage)."""
    out = out or sys.stdout
    err = err or sys.stderr
    _ensure_logging(config)
    command = args.dlq_command
    if getattr(args, "timeout", 30.0) <= 0:
        err.write("kafkapipe dlq: --timeout must be > 0\n")
        return EXIT_USAGE
    try:
        return COMMANDS[command](args, config, out, err)
    except UsageError as exc:
        err.write(f"kafkapipe dlq {command}: {exc}\n")
        return EXIT_USAGE
    except DlqError as exc:
        err.write(f"kafkapipe dlq {command}: {exc}\n")
        return EXIT_FAILURE
    except KafkaException as exc:
        err.write(f"kafkapipe dlq {command}: {describe(exc, config.kafka.bootstrap_servers)}\n")
        return EXIT_FAILURE


def _ensure_logging(config: Config) -> None:
    if not logging.getLogger().handlers:
        logmod.setup(config.logging.level, config.logging.format)


def main(argv: list[str] | None = None) -> int:
    """``python -m kafkapipe.dlq --config FILE list …`` without the full command line."""
    from kafkapipe import config as configmod
    from kafkapipe.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m kafkapipe.dlq")
    parser.add_argument("--config", default=None, metavar="FILE", help="pipeline TOML file (default: defaults)")
    add_subcommands(parser)
    args = parser.parse_args(argv)
    try:
        config = configmod.load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"kafkapipe dlq: {exc}\n")
        return EXIT_USAGE
    logmod.setup(config.logging.level, config.logging.format)
    return run(args, config)
