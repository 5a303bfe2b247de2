"""``kafkapipe migrate retry-queue``: the legacy retry queue onto pending, the retry topics or the DLQ.

The whole plan is built before anything is sent (a retry queue is a queue, not an archive: it
fits in memory), so ``--dry-run`` shows exactly what a real run would send and each retry topic
receives its tasks in due order (the delay stage waits on the head of each partition,
``docs/contract.md`` §1).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import TextIO

from attrs import define, field

from kafkapipe.config import Config
from kafkapipe.dlq.audit import AUDIT, user
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.sending import Outgoing, deliver
from kafkapipe.kafka.clients import make_producer
from kafkapipe.kafka.records import Output
from kafkapipe.messages import format_ts, utcnow
from kafkapipe.migrate import migratelog
from kafkapipe.migrate.legacy import BadRow, LegacyTask, required_columns, task_columns, to_task
from kafkapipe.migrate.routing import ROUTES, Planned, Router
from kafkapipe.migrate.source import read_rows, shown
from kafkapipe.printable import printable

log = logging.getLogger("kafkapipe.migrate")
SHOWN_PER_ROUTE = 5
MAX_BAD_KEPT = 1000
TIMEOUT = 30.0


@define
class Plan:
    planned: list[Planned] = field(factory=list)
    bad: list[tuple[int, str]] = field(factory=list)
    bad_count: int = 0
    already: int = 0
    duplicates: int = 0
    before_since: int = 0
    rows: int = 0

    def add_bad(self, row: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_BAD_KEPT:
            self.bad.append((row, reason))

    def counts(self) -> Counter:
        return Counter(p.route for p in self.planned)


def legacy_tasks(config: Config, uri: str, plan: Plan, progress: TextIO | None) -> Iterator[LegacyTask]:
    mapping, created = config.migrate, utcnow()
    for number, row in read_rows(uri, config, task_columns(mapping), required_columns(mapping)):
        plan.rows = number
        if progress is not None and number % 1000 == 0:
            print(f"\rread {number} rows", end="", file=progress, flush=True)
        try:
            if isinstance(row, BadRow):
                raise row
            yield to_task(number, row, mapping, created)
        except BadRow as exc:
            plan.add_bad(number, str(exc))
    if progress is not None:
        print(f"\rread {plan.rows} rows", file=progress)


def make_plan(config: Config, uri: str, done: set[str], since: datetime | None, limit: int | None,
              progress: TextIO | None = None) -> Plan:
    plan, router, seen = Plan(), Router(config), set()
    for legacy in legacy_tasks(config, uri, plan, progress):
        task_id = legacy.task.task_id
        if since is not None and legacy.task.original_timestamp < since:
            plan.before_since += 1
        elif task_id in done:
            plan.already += 1
        elif task_id in seen:
            plan.duplicates += 1
        elif limit is None or len(plan.planned) < limit:
            seen.add(task_id)
            plan.planned.append(router.plan(legacy))
    plan.planned.sort(key=lambda p: (p.route, p.topic, p.due.timestamp() if p.due else 0.0))
    return plan


def run(config: Config, uri: str, *, dry_run: bool, since: datetime | None, limit: int | None,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """0: everything planned was sent (or shown); 1: rows were skipped as bad or sends failed."""
    progress = err if err.isatty() else None
    with Reader(config, TIMEOUT) as reader:
        done = migratelog.read_migrated(reader)
        plan = make_plan(config, uri, done, since, limit, progress)
        report_bad(plan, err)
        if dry_run:
            print_plan(plan, out)
            print_summary(plan, None, out)
            return 1 if plan.bad_count else 0
        if plan.planned:
            migratelog.ensure_log(reader, config)
    failed = send(config, uri, plan)
    print_summary(plan, failed, out)
    audit(config, uri, plan, failed)
    return 1 if plan.bad_count or failed else 0


def _outgoing(ident: str, out: Output) -> Outgoing:
    assert isinstance(out.key, str), "the routes key every output by its task id"
    return Outgoing(ident, out.topic, out.key, out.value, out.headers)


def send(config: Config, uri: str, plan: Plan) -> int:
    """Sends every planned task's outputs, then logs the delivered ones; returns how many failed."""
    if not plan.planned:
        return 0
    producer = make_producer(config)
    messages = [_outgoing(f"{p.task_id}:{i}", o) for p in plan.planned for i, o in enumerate(p.outputs)]
    sent = deliver(producer, messages, TIMEOUT)
    delivered = [p for p in plan.planned if all(sent.ok(f"{p.task_id}:{i}") for i in range(len(p.outputs)))]
    at, by = format_ts(utcnow()), user()
    marks = [migratelog.mark(config, p.task_id, p.legacy.row, p.route, shown(uri), at, by) for p in delivered]
    logged = deliver(producer, marks, TIMEOUT)
    unlogged = sum(1 for m in marks if not logged.ok(m.ident))
    if unlogged:
        log.warning("%d migrated task(s) not recorded in %s: a next run sends them again", unlogged,
                    migratelog.log_topic(config))
    return len(plan.planned) - len(delivered)


def report_bad(plan: Plan, err: TextIO) -> None:
    for row, reason in plan.bad:
        print(f"row {row}: skipped: {printable(reason)}", file=err)
    if plan.bad_count > len(plan.bad):
        print(f"… and {plan.bad_count - len(plan.bad)} more bad row(s)", file=err)


def print_plan(plan: Plan, out: TextIO) -> None:
    print("plan (dry run, nothing sent):", file=out)
    for route in ROUTES:
        chosen = [p for p in plan.planned if p.route == route][:SHOWN_PER_ROUTE]
        for p in chosen:
            due = format_ts(p.due) if p.due else "-"
            task = p.legacy.task
            print(f"  {route:14} row {p.legacy.row:<8} {task.task_id} retry_count={task.retry_count} "
                  f"{printable(p.topic)} retry-at={due}", file=out)


def print_summary(plan: Plan, failed: int | None, out: TextIO) -> None:
    counts = plan.counts()
    print(f"{'rows read':22} {plan.rows}", file=out)
    for route in ROUTES:
        print(f"{'to ' + route:22} {counts.get(route, 0)}", file=out)
    print(f"{'already migrated':22} {plan.already}", file=out)
    print(f"{'duplicate rows':22} {plan.duplicates}", file=out)
    print(f"{'before --since':22} {plan.before_since}", file=out)
    print(f"{'bad rows skipped':22} {plan.bad_count}", file=out)
    if failed is not None:
        print(f"{'sent':22} {len(plan.planned) - failed}", file=out)
        print(f"{'failed to send':22} {failed}", file=out)


def audit(config: Config, uri: str, plan: Plan, failed: int) -> None:
    if not AUDIT.isEnabledFor(logging.INFO):
        AUDIT.setLevel(logging.INFO)
    who = user()
    counts = plan.counts()
    AUDIT.info("migrate retry-queue by %s", who, extra={
        "action": "migrate.retry-queue", "user": who, "host": socket.gethostname(), "source": shown(uri),
        "sent": len(plan.planned) - failed, "failed": failed, "bad_rows": plan.bad_count,
        "already_migrated": plan.already, **{f"routed_{r.replace(' ', '_')}": counts.get(r, 0) for r in ROUTES},
    })

