"""``replay``: send dead letters back to ``topics.pending`` for a fresh set of attempts.

A replayed task goes to ``topics.pending`` with ``retry_count`` 0, no
``retry_at``, the dead letter's error as ``last_error``, and ``metadata``
``replayed_at`` / ``replayed_from`` (``<dlq topic>:<partition>:<offset>``).
A task that has several dead letters in the selection is sent once, from its
latest one; all of them are recorded in the replay log (see
:mod:`kafkapipe.dlq.replaylog` for why running ``replay`` twice sends nothing twice).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any, TextIO

from kafkapipe.config import Config
from kafkapipe.dlq.audit import AUDIT_MAX_IDS, audit
from kafkapipe.dlq.entries import DeadLetter, selector
from kafkapipe.dlq.errors import EXIT_FAILURE, EXIT_OK
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.render import counts_line
from kafkapipe.dlq.replaylog import ensure_replay_log, mark_for, read_marks, record_replays, replay_log_topic
from kafkapipe.dlq.sending import Deliveries, Outgoing, deliver
from kafkapipe.kafka.clients import headers, make_producer
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, ErrorInfo, dumps, evolve, format_ts, utcnow
from kafkapipe.printable import printable

_COUNTS = ("matched", "replayed", "already_replayed", "undecodable", "failed", "not_found")


def replayed_task(entry: DeadLetter, dlq_topic: str, now: datetime) -> DownloadTask:
    """The task to send again: a fresh attempt budget, and where it came from."""
    if entry.failed is None:
        raise ValueError(f"dead letter {entry.coordinate} cannot be decoded, so it cannot be replayed")
    task = entry.failed.task
    return evolve(
        task,
        retry_count=0,
        retry_at=None,
        last_error=ErrorInfo(category=entry.failed.error_category, message=entry.failed.error_message),
        metadata={
            **task.metadata,
            "replayed_at": format_ts(now),
            "replayed_from": f"{dlq_topic}:{entry.partition}:{entry.offset}",
        },
    )


def cmd_replay(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    counts = dict.fromkeys(_COUNTS, 0)
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(config.topics.pending)
        chosen, seen = _select(reader, args, counts)
        missing = sorted(set(args.task_ids or ()) - seen)
        counts["not_found"] = len(missing)
        for task_id in missing:
            err.write(f"kafkapipe dlq replay: no dead letter for task {printable(task_id)}\n")
        if args.dry_run:
            _dry_run(args, config, chosen, counts, out)
            return EXIT_FAILURE if missing else EXIT_OK
        sent, unrecorded = _send_and_record(reader, config, chosen, args.timeout)
    failed = [t for t in chosen if not sent.ok(t)]
    replayed = [t for t in chosen if sent.ok(t)]
    counts.update(replayed=len(replayed), failed=len(failed), unrecorded=unrecorded)
    _write_outcome(config, chosen, sent, unrecorded, out, err)
    audit(
        "replay",
        config,
        dry_run=False,
        counts=counts,
        task_ids=replayed,
        failed_task_ids=failed,
        **_selection(args),
    )
    out.write(counts_line(counts) + "\n")
    return EXIT_FAILURE if failed or missing or unrecorded else EXIT_OK


def _select(
    reader: Reader, args: argparse.Namespace, counts: dict[str, int]
) -> tuple[dict[str, list[DeadLetter]], set[str]]:
    """Matching, decodable, not yet replayed dead letters grouped by task id; and every task id seen."""
    marks = read_marks(reader)
    selected = selector(task_ids=args.task_ids, category=args.category)
    chosen: dict[str, list[DeadLetter]] = {}
    seen: set[str] = set()
    for entry in filter(selected, reader.dead_letters(include_acked=args.all)):
        counts["matched"] += 1
        if entry.task_id is not None:
            seen.add(entry.task_id)
        if entry.failed is None:
            counts["undecodable"] += 1
        elif mark_for(entry, marks) is not None:
            counts["already_replayed"] += 1
        else:
            chosen.setdefault(entry.failed.task.task_id, []).append(entry)
    return chosen, seen


def _latest(entries: list[DeadLetter]) -> DeadLetter:
    return max(
        entries,
        key=lambda e: (
            e.failed.failed_at if e.failed else datetime.min.replace(tzinfo=UTC),
            e.partition,
            e.offset,
        ),
    )


def _dry_run(
    args: argparse.Namespace, config: Config, chosen: dict[str, list[DeadLetter]], counts: dict[str, int], out: TextIO
) -> None:
    for task_id, entries in chosen.items():
        out.write(f"would replay {printable(task_id)} from {config.topics.dlq}:{_latest(entries).coordinate}\n")
    counts["would_replay"] = len(chosen)
    audit("replay", config, dry_run=True, counts=counts, task_ids=list(chosen), **_selection(args))
    out.write(counts_line(counts) + "\n")


def _send_and_record(
    reader: Reader, config: Config, chosen: dict[str, list[DeadLetter]], timeout: float
) -> tuple[Deliveries, int]:
    """Send the chosen tasks, then record the delivered ones; the reports, and how many records failed."""
    if not chosen:
        return Deliveries(), 0
    ensure_replay_log(reader, config)
    producer = make_producer(config, **{"message.timeout.ms": int(timeout * 1000)})
    sent = _send_tasks(config, producer, chosen, timeout)
    return sent, record_replays(config, producer, chosen, sent, timeout)


def _send_tasks(config: Config, producer: Any, chosen: dict[str, list[DeadLetter]], timeout: float) -> Deliveries:
    now = utcnow()
    tasks = [replayed_task(_latest(entries), config.topics.dlq, now) for entries in chosen.values()]
    return deliver(
        producer,
        (
            Outgoing(
                ident=task.task_id,
                topic=config.topics.pending,
                key=task.task_id,
                value=dumps(task),
                headers=headers(SCHEMA_TASK, task.trace_id, task.task_id),
            )
            for task in tasks
        ),
        timeout,
    )


def _write_outcome(
    config: Config,
    chosen: dict[str, list[DeadLetter]],
    sent: Deliveries,
    unrecorded: int,
    out: TextIO,
    err: TextIO,
) -> None:
    for task_id in (t for t in chosen if sent.ok(t)):
        out.write(
            f"replayed {printable(task_id)} from {config.topics.dlq}:{_latest(chosen[task_id]).coordinate} "
            f"-> {sent.where(task_id)}\n"
        )
    for task_id in (t for t in chosen if not sent.ok(t)):
        err.write(
            f"kafkapipe dlq replay: task {printable(task_id)} not delivered: "
            f"{sent.error(task_id) or 'no delivery report in time'}\n"
        )
    if unrecorded:
        err.write(
            f"kafkapipe dlq replay: {unrecorded} replayed dead letter(s) could not be recorded in "
            f"{replay_log_topic(config)}; running replay again would send them again\n"
        )


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    """What the operator asked to replay, for the audit line."""
    if args.task_ids:
        return {
            "selection": "task_ids",
            "requested_task_ids": args.task_ids[:AUDIT_MAX_IDS],
            "include_acked": args.all,
        }
    if args.category is not None:
        return {"selection": "category", "category": args.category, "include_acked": args.all}
    return {"selection": "all_entries", "include_acked": args.all}
