"""``kafkapipe …``: the operator's command line.

Exit status: 0 success; 1 runtime failure; 2 configuration or usage error,
with a message that names the cause.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kafkapipe import config as configmod
from kafkapipe.cli.defaults import CONFIG_HELP, config_path, version
from kafkapipe.errors import ConfigError
from kafkapipe.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from kafkapipe.log import mask_secrets
from kafkapipe.printable import json_text, printable


def _with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafkapipe", description="Claim attachments from Kafka into storage.")
    parser.add_argument("--version", action="version", version=f"kafkapipe {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"))

    worker = _with_config(sub.add_parser("worker", help="run one stage in the foreground"))
    worker.add_argument("--stage", required=True, choices=configmod.STAGES)

    supervisor = _with_config(sub.add_parser("supervisor", help="run the stages as supervised processes"))
    supervisor.add_argument("--stages", default=None, help="comma-separated subset of stages")

    topics = sub.add_parser("topics", help="topic administration")
    _with_config(topics.add_subparsers(dest="action", required=True).add_parser("create"))

    produce = _with_config(sub.add_parser("produce", help="send events (JSON lines) to the events topic"))
    produce.add_argument("events", metavar="EVENTS.jsonl", help="file of events, one JSON object a line; - for stdin")
    produce.add_argument("--allow-invalid", action="store_true",
                         help="send lines that fail validation too (they will be dead-lettered by ingest)")

    url_check = _with_config(sub.add_parser("url-check", help="judge URLs with the download validator"))
    url_check.add_argument("urls", nargs="+", metavar="URL")

    cfg = sub.add_parser("config", help="configuration")
    check = _with_config(cfg.add_subparsers(dest="action", required=True).add_parser("check"))
    check.add_argument("--stages", default="", metavar="A,B", help="check only what these stages need")
    check.add_argument("--reload", action="store_true",
                       help="before a reload: skip the metrics port, which the running supervisor holds")

    from kafkapipe.cli import inventory as cli_inventory

    cli_inventory.add_parser(sub, _with_config)

    from kafkapipe import dlq

    dlq.add_parser(sub, _with_config)

    from kafkapipe.trace import cli as trace_cli

    trace_cli.add_parser(sub, _with_config)

    from kafkapipe.status import cli as status_cli

    status_cli.add_parser(sub, _with_config)

    from kafkapipe.cli import migrate as cli_migrate

    cli_migrate.add_parser(sub, _with_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The one place a ConfigError becomes exit status 2 (docs/contract.md, "Exit codes")."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:
        print(f"kafkapipe: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _main(argv: list[str]) -> int:
    if argv[:1] == ["supervisor"]:  # its own parser: the same options as bin/kafkapipe-supervisor
        from kafkapipe.supervisor import main as supervisor_main

        return supervisor_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "completion":
            import shtab

            print(shtab.complete(parser, shell=args.shell))
            return EXIT_OK
        config = configmod.load(config_path(args.config))
        from kafkapipe import log

        log.setup(config.logging.level, config.logging.format)
        if args.command != "worker":
            # A command line tool says what failed in one line; librdkafka's retries are noise there.
            logging.getLogger("kafkapipe.librdkafka").setLevel(logging.CRITICAL + 1)
        code = COMMANDS[args.command](args, config)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`| head`): no traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def cmd_worker(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.worker import WorkerControl, run_worker

    control = WorkerControl()
    control.install_signal_handlers()
    code = run_worker(config, args.stage, control)
    # Downloads abandoned at the drain deadline must not hold the exit: they were not
    # committed and will be redone.
    logging.shutdown()
    os._exit(code)


def cmd_topics(args: argparse.Namespace, config: configmod.Config) -> int:
    from confluent_kafka import KafkaException

    from kafkapipe.kafka.admin import create_topics

    try:
        created = create_topics(config)
    except KafkaException as exc:
        print(f"kafkapipe: creating topics failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for name, state in created.outcome.items():
        print(f"{state:8} {name}")
    for warning in created.warnings:
        print(f"kafkapipe: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_produce(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.producing import EventFileError, send_events

    try:
        sent = send_events(config, args.events, allow_invalid=args.allow_invalid)
    except EventFileError as exc:
        print(f"kafkapipe: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"sent {sent} event(s) to {config.topics.events}")
    return EXIT_OK


def cmd_url_check(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.cli.urlcheck import url_check

    return url_check(config, args.urls, sys.stdout)


def cmd_config(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.preflight import check_or_raise

    check_or_raise(config, configmod.parse_stages(args.stages) or configmod.STAGES, ports=not args.reload)
    if args.reload:  # run by ExecReload: one line in the journal, not the whole configuration
        print(f"{printable(str(config.source))}: configuration OK")
        return EXIT_OK
    # Masked by name (config.to_display) and then by content: a SAS in account_url, a key anywhere.
    # Only JSON on stdout, so `config check | jq` works.
    print(f"# effective configuration from {printable(str(config.source))} (secrets masked)", file=sys.stderr)
    print(json_text(mask_secrets(configmod.to_display(config)), indent=2))
    return EXIT_OK


def cmd_inventory(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.cli import inventory as cli_inventory

    return cli_inventory.run(args, config)


def cmd_migrate(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.cli import migrate as cli_migrate

    return cli_migrate.run(args, config)


def cmd_compare(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.cli import migrate as cli_migrate

    return cli_migrate.run_compare(args, config)


def cmd_offsets(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.cli import migrate as cli_migrate

    return cli_migrate.run_offsets(args, config)


def cmd_dlq(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe import dlq

    return dlq.run(args, config)


def cmd_trace(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.trace import cli as trace_cli

    return trace_cli.run(args, config, sys.stdout, sys.stderr)


def cmd_status(args: argparse.Namespace, config: configmod.Config) -> int:
    from kafkapipe.status import cli as status_cli

    return status_cli.run(args, config, sys.stdout, sys.stderr)


COMMANDS = {
    "worker": cmd_worker,
    "topics": cmd_topics,
    "produce": cmd_produce,
    "url-check": cmd_url_check,
    "config": cmd_config,
    "inventory": cmd_inventory,
    "dlq": cmd_dlq,
    "trace": cmd_trace,
    "status": cmd_status,
    "migrate": cmd_migrate,
    "compare": cmd_compare,
    "offsets": cmd_offsets,
}

