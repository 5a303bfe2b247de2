"""``replay``: send dead letters back for a fresh set of attempts, after showing the plan.

A replayed task goes to ``topics.pending`` with ``retry_count`` 0, no
``retry_at``, the dead letter's error as ``last_error``, and ``metadata``
``replayed_at`` / ``replayed_from`` (``<dlq topic>:<partition>:<offset>``).
A task that has several dead letters in the selection is sent once, from its
latest one; all of them are recorded in the replay log (see
:mod:`kafkapipe.dlq.replaylog` for why running ``replay`` twice sends nothing twice).
With ``--events`` the events DLQ's entries go back to ``topics.events`` byte for byte, with
their original key and headers as the record holds them (in order, duplicates and headers
without a value included; ingest's ``error-*``/``source-*`` headers removed). A dead letter
whose value was cut to fit the dead-letter topic (header ``truncated: true``) is refused:
it is counted as ``truncated``, named on stderr, and the command exits non-zero.

Nothing is sent without ``--execute`` or a "y" at the prompt on a terminal: the plan is
printed instead, and audited as a dry run. ``--ack`` then moves the review mark past every
leading entry of a partition that is now replayed (see :mod:`kafkapipe.dlq.ack`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TextIO

from kafkapipe.config import Config
from kafkapipe.dlq.ack import acknowledge_prefix
from kafkapipe.dlq.audit import AUDIT_MAX_IDS, audit, check_audit_log
from kafkapipe.dlq.browse import dlq_topic
from kafkapipe.dlq.entries import DeadLetter
from kafkapipe.dlq.errors import EXIT_FAILURE, EXIT_OK, UsageError
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.render import counts_line
from kafkapipe.dlq.replaylog import ensure_replay_log, mark_for, read_marks, record_replays, replay_log_topic
from kafkapipe.dlq.selection import Selection, newest_first
from kafkapipe.dlq.sending import Deliveries, Outgoing, deliver
from kafkapipe.errors import ErrorCategory
from kafkapipe.kafka.clients import headers, make_producer
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, ErrorInfo, dumps, evolve, format_ts, utcnow
from kafkapipe.printable import printable

_COUNTS = ("matched", "replayed", "already_replayed", "undecodable", "truncated", "failed", "not_found")
# Categories that will most likely fail the same way again unless something was fixed.
RISKY = (ErrorCategory.PERMANENT.value, ErrorCategory.VALIDATION.value)
# Headers ingest adds to an events dead letter; the replayed event goes without them.
_DEAD_LETTER_HEADERS = {"error-category", "error-message", "source-topic", "source-partition", "source-offset"}


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
    selection = Selection.from_args(args)
    if not (selection.describe() or args.all_entries):
        raise UsageError("say what to replay: --task-id, --category, --since, --trace-id, --host, or --all-entries")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be > 0")
    topic = dlq_topic(args, config)
    target = config.topics.events if args.events else config.topics.pending
    counts = dict.fromkeys(_COUNTS, 0)
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(target)
        reader.require_partitions(topic)
        chosen, seen, truncated = _select(reader, topic, selection, args, counts)
        missing = sorted(set(selection.task_ids) - seen)
        counts["not_found"] = len(missing)
        for task_id in missing:
            err.write(f"kafkapipe dlq replay: no dead letter for task {printable(task_id)}\n")
        for entry in truncated:
            err.write(
                f"kafkapipe dlq replay: {topic}:{entry.coordinate} not replayed: its value was cut to fit "
                f"the dead-letter topic (original size {printable(entry.headers.get('original-size', '?'))} "
                "bytes); find the original at its source-topic/partition/offset headers\n"
            )
        _plan(topic, target, selection, chosen, out, err)
        if not chosen or not _go_ahead(args, len(chosen), out, err):
            counts["would_replay"] = len(chosen)
            audit("replay", config, dry_run=not args.execute, counts=counts, task_ids=list(chosen), dlq_topic=topic,
                  **_audited(selection, args))
            out.write(counts_line(counts) + "\n")
            return EXIT_FAILURE if missing or truncated else EXIT_OK
        check_audit_log(config)
        sent, unrecorded = _send_and_record(reader, config, topic, target, chosen, args, err)
        acked = acknowledge_prefix(reader, topic, read_marks(reader, topic), out) if args.ack else {}
    failed = [t for t in chosen if not sent.ok(t)]
    replayed = [t for t in chosen if sent.ok(t)]
    counts.update(replayed=len(replayed), failed=len(failed), unrecorded=unrecorded)
    _write_outcome(config, topic, chosen, sent, unrecorded, out, err)
    audit("replay", config, dry_run=False, counts=counts, task_ids=replayed, failed_task_ids=failed,
          dlq_topic=topic, acknowledged={str(p): o for p, o in acked.items()}, **_audited(selection, args))
    out.write(counts_line(counts) + "\n")
    return EXIT_FAILURE if failed or missing or unrecorded or truncated else EXIT_OK


def _select(
    reader: Reader, topic: str, selection: Selection, args: argparse.Namespace, counts: dict[str, int]
) -> tuple[dict[str, list[DeadLetter]], set[str], list[DeadLetter]]:
    """Matching, replayable, not yet replayed entries by replay id (newest ``--limit``); every task id seen;
    the events dead letters refused because their value was cut."""
    marks = read_marks(reader, topic)
    chosen: dict[str, list[DeadLetter]] = {}
    seen: set[str] = set()
    truncated: list[DeadLetter] = []
    for entry in newest_first(reader, topic, selection, include_acked=args.all):
        counts["matched"] += 1
        if entry.task_id is not None:
            seen.add(entry.task_id)
        if not entry.replayable:
            counts["undecodable"] += 1
        elif entry.event and entry.truncated:
            counts["truncated"] += 1
            truncated.append(entry)
        elif mark_for(entry, marks) is not None:
            counts["already_replayed"] += 1
        elif entry.replay_id in chosen or args.limit is None or len(chosen) < args.limit:
            replay_id = entry.replay_id
            assert replay_id is not None  # a replayable entry has one: its task id, or its coordinate
            chosen.setdefault(replay_id, []).append(entry)
    return chosen, seen, truncated


def _plan(
    topic: str, target: str, selection: Selection, chosen: dict[str, list[DeadLetter]], out: TextIO, err: TextIO
) -> None:
    filters = " ".join(f"{k}={printable(str(v))}" for k, v in selection.describe().items()) or "every entry"
    out.write(f"plan: replay {len(chosen)} from {topic} to {target} ({filters})\n")
    for ident, entries in chosen.items():
        latest = _latest(entries)
        out.write(f"would replay {printable(ident)} from {topic}:{latest.coordinate} ({latest.category})\n")
    risky = sum(1 for entries in chosen.values() if _latest(entries).category in RISKY)
    if risky:
        err.write(
            f"warning: {risky} of these failed as {' or '.join(RISKY)}: they will fail the same way again "
            "unless the cause was fixed\n"
        )


def _go_ahead(args: argparse.Namespace, n: int, out: TextIO, err: TextIO) -> bool:
    if args.dry_run:
        return False
    if args.execute:
        return True
    if sys.stdin.isatty() and out is sys.stdout:
        err.write(f"replay these {n}? [y/N] ")
        err.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    err.write("nothing sent: add --execute to replay them\n")
    return False


def _latest(entries: list[DeadLetter]) -> DeadLetter:
    return max(
        entries,
        key=lambda e: (
            e.failed_at or datetime.min.replace(tzinfo=UTC),
            e.partition,
            e.offset,
        ),
    )


def _send_and_record(
    reader: Reader, config: Config, topic: str, target: str, chosen: dict[str, list[DeadLetter]],
    args: argparse.Namespace, err: TextIO,
) -> tuple[Deliveries, int]:
    """Send the chosen entries, then record the delivered ones; the reports, and how many records failed."""
    ensure_replay_log(reader, config, topic)
    producer = make_producer(config, **{"message.timeout.ms": int(args.timeout * 1000)})
    now = utcnow()
    outgoing = [_outgoing(config, topic, target, ident, _latest(entries), now) for ident, entries in chosen.items()]
    total = len(outgoing)

    def progress(produced: int, sent: Deliveries) -> None:
        if produced == total or produced % max(1, total // 10) == 0:
            err.write(f"sending {produced}/{total} ({len(sent.reports)} acknowledged by the broker)\n")

    sent = deliver(producer, outgoing, args.timeout, rate=args.rate, progress=progress)
    return sent, record_replays(config, producer, chosen, sent, args.timeout, topic)


def _outgoing(config: Config, topic: str, target: str, ident: str, entry: DeadLetter, now: datetime) -> Outgoing:
    if entry.event:
        kept = [(k, v) for k, v in entry.raw_headers if k not in _DEAD_LETTER_HEADERS]
        return Outgoing(ident=ident, topic=target, key=entry.raw_key, value=entry.value or b"", headers=kept)
    task = replayed_task(entry, topic, now)
    return Outgoing(
        ident=ident, topic=target, key=task.task_id, value=dumps(task),
        headers=headers(SCHEMA_TASK, task.trace_id, task.task_id),
    )


def _write_outcome(
    config: Config, topic: str, chosen: dict[str, list[DeadLetter]], sent: Deliveries, unrecorded: int,
    out: TextIO, err: TextIO,
) -> None:
    for ident in (t for t in chosen if sent.ok(t)):
        out.write(
            f"replayed {printable(ident)} from {topic}:{_latest(chosen[ident]).coordinate} -> {sent.where(ident)}\n"
        )
    for ident in (t for t in chosen if not sent.ok(t)):
        err.write(
            f"kafkapipe dlq replay: {printable(ident)} not delivered: "
            f"{sent.error(ident) or 'no delivery report in time'}\n"
        )
    if unrecorded:
        err.write(
            f"kafkapipe dlq replay: {unrecorded} replayed dead letter(s) could not be recorded in "
            f"{replay_log_topic(config, topic)}; running replay again would send them again\n"
        )


def _audited(selection: Selection, args: argparse.Namespace) -> dict[str, object]:
    """What the operator asked to replay, for the audit line."""
    given = selection.describe()
    given.pop("task_ids", None)
    if selection.task_ids:  # what describe() gave as task_ids
        given["requested_task_ids"] = list(selection.task_ids[:AUDIT_MAX_IDS])
    names = [k for k in ("task_ids", "category", "since", "trace_id", "host") if k in selection.describe()]
    kind = "all_entries" if not names else names[0] if len(names) == 1 else "filters"
    return {"selection": kind, "include_acked": args.all, "limit": args.limit, **given}
