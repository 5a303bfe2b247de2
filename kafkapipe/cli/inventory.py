"""``kafkapipe inventory summary|migrate|export|import``: the inventory from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from kafkapipe.config import Config
from kafkapipe.exitcodes import EXIT_FAILURE, EXIT_OK
from kafkapipe.inventory import Inventory, InventoryUnavailable, open_inventory
from kafkapipe.printable import printable


def add_parser(sub: argparse._SubParsersAction, with_config: Callable) -> None:
    inventory = sub.add_parser("inventory", help="the results inventory")
    actions = inventory.add_subparsers(dest="action", required=True)
    with_config(actions.add_parser("summary", help="rows by status"))
    with_config(actions.add_parser("migrate", help="bring the inventory's schema up to this version"))
    export = with_config(actions.add_parser("export", help="merge changed rows into a Delta table or Parquet file"))
    export.add_argument("--to", required=True, metavar="URI",
                        help="local path, or abfss://… (Azure Data Lake / OneLake) with the storage credential")
    export.add_argument("--format", choices=("delta", "parquet"), default="delta")
    seed = with_config(actions.add_parser("import", help="seed with what the legacy pipeline stored (status success)"))
    seed.add_argument("--legacy", required=True, metavar="URI",
                      help="legacy inventory: Delta table (path or abfss://…), .parquet, .csv or .jsonl")


def run(args: argparse.Namespace, config: Config, out: TextIO = sys.stdout) -> int:
    if args.action == "summary" and config.inventory.backend == "sqlite" and not Path(config.inventory.path).exists():
        print(f"kafkapipe: no inventory at {config.inventory.path} yet", file=sys.stderr)
        return EXIT_FAILURE
    try:
        inventory = open_inventory(config.inventory, check_schema=args.action != "migrate")
        try:
            return ACTIONS[args.action](args, config, inventory, out)
        finally:
            inventory.close()
    except InventoryUnavailable as exc:
        print(f"kafkapipe: inventory unavailable: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _summary(args: argparse.Namespace, config: Config, inventory: Inventory, out: TextIO) -> int:
    summary = inventory.summary()
    for status, count in sorted(summary.items()):
        print(f"{status:18} {count}", file=out)
    print(f"{'total':18} {sum(summary.values())}", file=out)
    return EXIT_OK


def _migrate(args: argparse.Namespace, config: Config, inventory: Inventory, out: TextIO) -> int:
    applied = inventory.migrate()
    version = inventory.schema_version()
    if applied:
        print(f"applied migration(s) {', '.join(map(str, applied))}; schema at version {version}", file=out)
    else:
        print(f"schema already at version {version}", file=out)
    return EXIT_OK


def _export(args: argparse.Namespace, config: Config, inventory: Inventory, out: TextIO) -> int:
    from kafkapipe.inventory.export import ExportError, export

    try:
        report = export(inventory, args.to, args.format, config)
    except ExportError as exc:
        print(f"kafkapipe: export failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"merged {report.rows} changed row(s) into {report.target}; watermark {report.watermark or '-'}", file=out)
    return EXIT_OK


def _import(args: argparse.Namespace, config: Config, inventory: Inventory, out: TextIO) -> int:
    from kafkapipe.migrate.importing import import_legacy
    from kafkapipe.migrate.source import SourceError

    try:
        report = import_legacy(inventory, args.legacy, config, out, sys.stderr)
    except SourceError as exc:
        print(f"kafkapipe: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if report.bad else EXIT_OK


ACTIONS = {"summary": _summary, "migrate": _migrate, "export": _export, "import": _import}
