"""``kafkapipe dlq list | show | replay | ack``: the operator's tool over the downloads DLQ.

Reading. The tool never subscribes: it ``assign()``\\ s each partition of
``topics.dlq`` from the review group's committed offset (``--all``: from the
low watermark) up to the high watermark taken when it started, so it always
terminates, and it never commits except in ``ack``. The review group is
``<group_prefix>.dlq-review``; its committed offset is the operator's
"reviewed up to here" mark, which ``ack`` moves (forwards only). Undecodable
entries are listed as category ``undecodable`` with the reason; they cannot
be replayed.

Replay and why running it twice sends nothing twice. A replayed task goes to
``topics.pending`` with ``retry_count`` 0, no ``retry_at``, the dead letter's
error as ``last_error``, and ``metadata`` ``replayed_at`` /
``replayed_from`` (``<dlq topic>:<partition>:<offset>``). Selections by task
id or category pick entries anywhere in the partition, so committing the
review group cannot record them without hiding the entries in between.
Instead, every replayed dead letter is recorded in a *replay log*: the
compacted topic ``<dlq topic>.replayed`` (one partition, created on first
use), keyed by ``"<partition>:<offset>"``, value ``{task_id, dlq_timestamp,
replayed_at, user, pending}``. ``replay`` reads the whole log first and skips
every dead letter that has a record with the same task id and DLQ timestamp
(so a DLQ topic that was deleted and re-created, reusing coordinates, is not
mistaken for replayed). Records are written only after the broker
acknowledged the replayed task: a crash between the two re-sends that task
on the next run (at-least-once, which the pipeline's idempotent tasks
tolerate) but never loses it. Two operators replaying the same entries at the
same instant can both send them, for the same reason and with the same
harmless outcome. A task that has several dead letters in the selection is
sent once, from its latest one; all of them are recorded.

Every ``replay`` and ``ack`` writes one audit line (logger
``kafkapipe.audit``) with the user, the host and what was done. Output for
people goes to stdout; errors to stderr. Attachment URLs are shown without
their query string (presigned URLs carry credentials) unless ``--reveal-url``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from attrs import frozen
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic

from kafkapipe import log as logmod
from kafkapipe.config import Config, parse_duration
from kafkapipe.kafka.clients import group_id, headers, make_admin, make_consumer, make_producer
from kafkapipe.log import redact_url
from kafkapipe.messages import (
    SCHEMA_TASK,
    DownloadTask,
    ErrorInfo,
    FailedDownload,
    InvalidMessage,
    dumps,
    evolve,
    format_ts,
    loads,
    parse_ts,
    utcnow,
)
from kafkapipe.resilience import backoff

AUDIT = logging.getLogger("kafkapipe.audit")
log = logging.getLogger(__name__)

REVIEW_STAGE = "dlq-review"
UNDECODABLE = "undecodable"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
MESSAGE_WIDTH = 50
AUDIT_MAX_IDS = 1000
_COORDINATE = re.compile(r"^(\d+):(\d+)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_URL = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)
_PASSING = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}


_RETRY_CALL = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}


def _raise_partition_errors(tps: list[TopicPartition] | None) -> list[TopicPartition]:
    for tp in tps or []:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return list(tps or [])


class DlqError(Exception):
    """A runtime failure of the tool (exit 1); the message says what and where."""


class UsageError(Exception):
    """Arguments that cannot work (exit 2)."""


def review_group(config: Config) -> str:
    return group_id(config, REVIEW_STAGE)


def replay_log_topic(config: Config) -> str:
    return f"{config.topics.dlq}.replayed"


# ------------------------------------------------------------------------------ the entries
@frozen
class DeadLetter:
    """One DLQ record; ``failed`` is None when it could not be decoded (``error`` says why)."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: str | None
    headers: dict[str, str]
    value: bytes | None
    failed: FailedDownload | None
    error: str | None = None

    @property
    def coordinate(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def task_id(self) -> str | None:
        if self.failed is not None:
            return self.failed.task.task_id
        return self.key or self.headers.get("task_id")

    @property
    def category(self) -> str:
        return self.failed.error_category if self.failed is not None else UNDECODABLE

    @property
    def message(self) -> str:
        """The failure; for a raw entry, the reason its stage gave (header) before our decode error."""
        if self.failed is not None:
            return self.failed.error_message
        return self.headers.get("error-message") or self.error or ""

    @property
    def failed_at(self) -> datetime | None:
        if self.failed is not None:
            return self.failed.failed_at
        if self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


def decode(msg: Message) -> DeadLetter:
    kind, stamp = msg.timestamp()
    key = msg.key()
    failed, error = None, None
    try:
        if msg.value() is None:
            raise InvalidMessage("empty message (no value)")
        failed = loads(msg.value(), FailedDownload)
    except InvalidMessage as exc:
        error = str(exc)
    return DeadLetter(
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0 else None,
        key=key.decode("utf-8", "replace") if key is not None else None,
        headers=_header_map(msg.headers()),
        value=msg.value(),
        failed=failed,
        error=error,
    )


def _header_map(raw: list | None) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in raw or [] if isinstance(v, bytes)}


@frozen
class ReplayMark:
    """What the replay log holds for one replayed dead letter."""

    task_id: str
    dlq_timestamp: int | None
    replayed_at: str
    user: str
    pending: str | None = None

    def covers(self, entry: DeadLetter) -> bool:
        return self.task_id == entry.task_id and self.dlq_timestamp == entry.timestamp_ms


def _decode_mark(value: bytes) -> ReplayMark | None:
    try:
        data = orjson.loads(value)
        return ReplayMark(
            task_id=str(data["task_id"]),
            dlq_timestamp=data.get("dlq_timestamp"),
            replayed_at=str(data.get("replayed_at", "")),
            user=str(data.get("user", "")),
            pending=data.get("pending"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


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


# ------------------------------------------------------------------------------ the reader
class Reader:
    """Bounded reads of the DLQ and the replay log with one assign-only consumer."""

    def __init__(self, config: Config, timeout: float) -> None:
        self.config = config
        self.timeout = timeout
        self.consumer: Consumer = make_consumer(
            config,
            review_group(config),
            **{
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # Partitions are read one after another: a long-polling fetch for the
                # previous one would hold up the next by up to its wait.
                "fetch.wait.max.ms": 25,
            },
        )

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()

    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions, or None when it does not exist."""
        metadata = self.consumer.list_topics(topic, timeout=self.timeout)
        found = metadata.topics.get(topic)
        if found is None:
            return None
        if found.error is not None:
            if found.error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                return None
            raise DlqError(f"metadata for {topic}: {found.error.str()}")
        return sorted(found.partitions)

    def require_partitions(self, topic: str) -> list[int]:
        parts = self.partitions(topic)
        if parts is None:
            raise DlqError(f"topic {topic} does not exist (kafkapipe topics create makes it)")
        return parts

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        tp = TopicPartition(topic, partition)
        return self._retrying(
            f"reading the watermarks of {topic}[{partition}]",
            lambda: self.consumer.get_watermark_offsets(tp, timeout=self.timeout, cached=False),
        )

    def committed(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        def fetch() -> list[TopicPartition]:
            found = self.consumer.committed(
                [TopicPartition(topic, p) for p in partitions], timeout=self.timeout
            )
            return _raise_partition_errors(found)

        found = self._retrying(f"reading the committed offsets of {review_group(self.config)}", fetch)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}

    def commit(self, topic: str, offsets: dict[int, int]) -> None:
        wanted = [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
        self._retrying(
            f"committing {review_group(self.config)}",
            lambda: _raise_partition_errors(self.consumer.commit(offsets=wanted, asynchronous=False)),
        )

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """Coordinator and leader calls fail while either moves or loads: retry until the timeout."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in _RETRY_CALL and not error.retriable():
                    raise DlqError(f"{what}: {error.str()}") from None
                pause = backoff(attempt, base=0.1, cap=2.0)
                if time.monotonic() + pause > deadline:
                    raise DlqError(f"{what}: {error.str()} (still failing after {self.timeout:g}s)") from None
                log.debug("%s: %s; retrying", what, error.str())
                time.sleep(pause)
                attempt += 1

    def ranges(self, topic: str, include_acked: bool) -> list[tuple[int, int, int]]:
        """(partition, start, end) to read, with every end taken now, before reading."""
        parts = self.require_partitions(topic)
        committed = {} if include_acked else self.committed(topic, parts)
        out = []
        for p in parts:
            low, high = self.watermarks(topic, p)
            mark = committed.get(p)
            start = low if mark is None else max(low, mark)
            if start < high:
                out.append((p, start, high))
        return out

    def scan(self, topic: str, partition: int, start: int, end: int) -> Iterator[Message]:
        """Messages of one partition in ``[start, end)``; gives up after ``timeout`` s without progress."""
        self.consumer.assign([TopicPartition(topic, partition, start)])
        try:
            last_progress = time.monotonic()
            while True:
                msg = self.consumer.poll(0.2)
                if msg is None:
                    if time.monotonic() - last_progress > self.timeout:
                        raise DlqError(f"no progress reading {topic}[{partition}] for {self.timeout:g}s")
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if (msg.topic(), msg.partition()) == (topic, partition):
                            return
                        continue
                    if error.code() in _PASSING or (error.retriable() and not error.fatal()):
                        log.debug("transient consumer error: %s", error.str())
                        continue
                    raise DlqError(f"reading {topic}[{partition}]: {error.str()}")
                if (msg.topic(), msg.partition()) != (topic, partition):
                    continue  # left over from a previous assignment
                if msg.offset() >= end:
                    return
                last_progress = time.monotonic()
                yield msg
                if msg.offset() >= end - 1:
                    return
        finally:
            self.consumer.unassign()

    def dead_letters(self, include_acked: bool) -> Iterator[DeadLetter]:
        topic = self.config.topics.dlq
        for partition, start, end in self.ranges(topic, include_acked):
            for msg in self.scan(topic, partition, start, end):
                yield decode(msg)

    def dead_letter_at(self, partition: int, offset: int) -> DeadLetter | None:
        topic = self.config.topics.dlq
        if partition not in self.require_partitions(topic):
            return None
        low, high = self.watermarks(topic, partition)
        if not low <= offset < high:
            return None
        for msg in self.scan(topic, partition, offset, offset + 1):
            return decode(msg) if msg.offset() == offset else None
        return None

    def replay_marks(self) -> dict[str, ReplayMark]:
        """The replay log, last record per coordinate wins; empty when the log does not exist yet."""
        topic = replay_log_topic(self.config)
        marks: dict[str, ReplayMark] = {}
        if self.partitions(topic) is None:
            return marks
        for partition, start, end in self.ranges(topic, include_acked=True):
            for msg in self.scan(topic, partition, start, end):
                key = (msg.key() or b"").decode("utf-8", "replace")
                mark = _decode_mark(msg.value()) if msg.value() is not None else None
                if mark is None:
                    marks.pop(key, None)
                else:
                    marks[key] = mark
        return marks


# ------------------------------------------------------------------------------ output
def _clean(text: str, width: int | None = None) -> str:
    text = _CONTROL.sub(" ", text).strip()
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _ts(value: datetime | None) -> str:
    return format_ts(value) if value is not None else ""


def _redact(node: Any) -> Any:
    """Every URL inside ``node`` without its query string: presigned URLs carry credentials."""
    if isinstance(node, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), node)
    if isinstance(node, dict):
        return {k: _redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


def _summary(entry: DeadLetter, mark: ReplayMark | None, dlq_topic: str, reveal: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "topic": dlq_topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "task_id": entry.task_id,
        "category": entry.category,
        "message": entry.message if reveal else _redact(entry.message),
        "failed_at": _ts(entry.failed_at) or None,
        "replayed_at": mark.replayed_at if mark else None,
    }
    if entry.failed is not None:
        task = entry.failed.task
        doc.update(
            trace_id=task.trace_id,
            attachment_url=task.attachment_url if reveal else redact_url(task.attachment_url),
            attempts=entry.failed.attempts,
            stage=entry.failed.stage,
        )
    return doc


_TABLE = "{:<16} {:<32} {:<12} {:<" + str(MESSAGE_WIDTH) + "} {:<29} {}"


def _table_header() -> str:
    return _TABLE.format("PARTITION:OFFSET", "TASK_ID", "CATEGORY", "MESSAGE", "FAILED_AT", "REPLAYED_AT")


def _table_row(entry: DeadLetter, mark: ReplayMark | None) -> str:
    return _TABLE.format(
        entry.coordinate,
        _clean(entry.task_id or "-"),
        _clean(entry.category),
        _clean(_redact(entry.message), MESSAGE_WIDTH),
        _ts(entry.failed_at),
        mark.replayed_at if mark else "",
    ).rstrip()


def _show_doc(entry: DeadLetter, mark: ReplayMark | None, dlq_topic: str, reveal: bool) -> dict[str, Any]:
    value: Any = None
    if entry.value is not None:
        try:
            value = orjson.loads(entry.value)
        except orjson.JSONDecodeError:
            value = None
    doc: dict[str, Any] = {
        "coordinate": f"{dlq_topic}:{entry.partition}:{entry.offset}",
        "timestamp": None
        if entry.timestamp_ms is None
        else _ts(datetime.fromtimestamp(entry.timestamp_ms / 1000, UTC)),
        "key": entry.key,
        "headers": entry.headers,
        "replayed": None
        if mark is None
        else {"replayed_at": mark.replayed_at, "user": mark.user, "pending": mark.pending},
        "value": value,
    }
    if entry.failed is None:
        doc["error"] = entry.error
        if value is None and entry.value is not None:
            doc["raw"] = entry.value[:4096].decode("utf-8", "replace")
    return doc if reveal else _redact(doc)


def _mark_for(entry: DeadLetter, marks: dict[str, ReplayMark]) -> ReplayMark | None:
    mark = marks.get(entry.coordinate)
    return mark if mark is not None and mark.covers(entry) else None


# ------------------------------------------------------------------------------ audit
def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def _audit(action: str, config: Config, **fields: Any) -> None:
    if not AUDIT.isEnabledFor(logging.INFO):
        AUDIT.setLevel(logging.INFO)  # the audit trail is not subject to the log level
    user = _user()
    ids = fields.pop("task_ids", None)
    if ids is not None:
        fields["task_ids"] = ids[:AUDIT_MAX_IDS]
        if len(ids) > AUDIT_MAX_IDS:
            fields["task_ids_truncated"] = len(ids)
    AUDIT.info(
        "dlq %s by %s",
        action,
        user,
        extra={
            "action": f"dlq.{action}",
            "user": user,
            "host": socket.gethostname(),
            "dlq_topic": config.topics.dlq,
            "review_group": review_group(config),
            **fields,
        },
    )


# ------------------------------------------------------------------------------ commands
def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return parse_ts(text, "--since")
    except InvalidMessage as exc:
        raise UsageError(f"{exc} (or give a duration like 2h)") from None


def cmd_list(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    since = _parse_since(args.since)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    shown = 0
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(config.topics.dlq)
        marks = reader.replay_marks()
        if not args.json:
            out.write(_table_header() + "\n")
        for entry in reader.dead_letters(include_acked=args.all):
            if args.category is not None and entry.category != args.category:
                continue
            if since is not None and (entry.failed_at is None or entry.failed_at < since):
                continue
            mark = _mark_for(entry, marks)
            if args.json:
                doc = _summary(entry, mark, config.topics.dlq, args.reveal_url)
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            else:
                out.write(_table_row(entry, mark) + "\n")
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    scope = "all entries" if args.all else "entries not yet acknowledged; --all shows every entry"
    err.write(f"{shown} dead letter(s) shown ({scope})\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    coordinate = _COORDINATE.match(args.ref)
    with Reader(config, args.timeout) as reader:
        marks = reader.replay_marks()
        if coordinate:
            found = reader.dead_letter_at(int(coordinate.group(1)), int(coordinate.group(2)))
            entries = [found] if found is not None else []
        else:
            entries = [e for e in reader.dead_letters(include_acked=args.all) if e.task_id == args.ref]
    if not entries:
        hint = "" if coordinate or args.all else " among unacknowledged entries (--all searches every entry)"
        err.write(f"kafkapipe dlq show: no dead letter {args.ref}{hint}\n")
        return EXIT_FAILURE
    for entry in entries:
        doc = _show_doc(entry, _mark_for(entry, marks), config.topics.dlq, args.reveal_url)
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _selector(args: argparse.Namespace) -> Callable[[DeadLetter], bool]:
    if args.task_ids:
        wanted = set(args.task_ids)
        return lambda entry: entry.task_id in wanted
    if args.category is not None:
        return lambda entry: entry.category == args.category
    return lambda entry: True


def _select(
    reader: Reader, args: argparse.Namespace, counts: dict[str, int]
) -> tuple[dict[str, list[DeadLetter]], set[str]]:
    """Matching, decodable, not yet replayed dead letters grouped by task id; and every task id seen."""
    marks = reader.replay_marks()
    selected = _selector(args)
    chosen: dict[str, list[DeadLetter]] = {}
    seen: set[str] = set()
    for entry in reader.dead_letters(include_acked=args.all):
        if not selected(entry):
            continue
        counts["matched"] += 1
        if entry.task_id is not None:
            seen.add(entry.task_id)
        if entry.failed is None:
            counts["undecodable"] += 1
        elif _mark_for(entry, marks) is not None:
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


def _ensure_replay_log(reader: Reader, config: Config) -> None:
    topic = replay_log_topic(config)
    if reader.partitions(topic) is not None:
        return
    admin = make_admin(config)
    new = NewTopic(
        topic,
        num_partitions=1,
        replication_factor=config.topics.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    try:
        admin.create_topics([new], request_timeout=reader.timeout)[topic].result(reader.timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise DlqError(f"cannot create the replay log {topic} (compacted, 1 partition): {exc}") from None


class _Deliveries:
    """Delivery reports by message id; a message without a report did not make it."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[KafkaError | None, str | None]] = {}

    def callback(self, ident: str) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, msg: Message) -> None:
            where = None if error else f"{msg.topic()}:{msg.partition()}:{msg.offset()}"
            self.reports[ident] = (error, where)

        return delivered

    def ok(self, ident: str) -> bool:
        report = self.reports.get(ident)
        return report is not None and report[0] is None


def _produce(producer: Any, topic: str, key: str, value: bytes, hdrs: list | None, on_delivery: Any) -> None:
    while True:
        try:
            producer.produce(topic, key=key.encode(), value=value, headers=hdrs, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)


def _send_tasks(
    config: Config, producer: Any, chosen: dict[str, list[DeadLetter]], timeout: float
) -> _Deliveries:
    now = utcnow()
    deliveries = _Deliveries()
    for task_id, entries in chosen.items():
        entry = _latest(entries)
        task = replayed_task(entry, config.topics.dlq, now)
        hdrs = headers(SCHEMA_TASK, task.trace_id, task.task_id)
        _produce(producer, config.topics.pending, task_id, dumps(task), hdrs, deliveries.callback(task_id))
        producer.poll(0)
    producer.flush(timeout + 5)
    return deliveries


def _record(
    config: Config, producer: Any, chosen: dict[str, list[DeadLetter]], sent: _Deliveries, timeout: float
) -> int:
    """Write the replay log for every delivered task; returns how many records failed."""
    topic = replay_log_topic(config)
    recorded = _Deliveries()
    user, now = _user(), format_ts(utcnow())
    wanted = []
    for task_id, entries in chosen.items():
        if not sent.ok(task_id):
            continue
        for entry in entries:
            mark = {
                "task_id": task_id,
                "dlq_timestamp": entry.timestamp_ms,
                "replayed_at": now,
                "user": user,
                "pending": sent.reports[task_id][1],
            }
            _produce(
                producer,
                topic,
                entry.coordinate,
                orjson.dumps(mark),
                None,
                recorded.callback(entry.coordinate),
            )
            wanted.append(entry.coordinate)
        producer.poll(0)
    producer.flush(timeout + 5)
    return sum(1 for coordinate in wanted if not recorded.ok(coordinate))


def cmd_replay(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    counts = {
        "matched": 0,
        "replayed": 0,
        "already_replayed": 0,
        "undecodable": 0,
        "failed": 0,
        "not_found": 0,
    }
    with Reader(config, args.timeout) as reader:
        reader.require_partitions(config.topics.pending)
        chosen, seen = _select(reader, args, counts)
        missing = sorted(set(args.task_ids or ()) - seen)
        counts["not_found"] = len(missing)
        for task_id in missing:
            err.write(f"kafkapipe dlq replay: no dead letter for task {task_id}\n")
        if args.dry_run:
            for task_id, entries in chosen.items():
                out.write(f"would replay {task_id} from {config.topics.dlq}:{_latest(entries).coordinate}\n")
            counts["would_replay"] = len(chosen)
            _audit("replay", config, dry_run=True, counts=counts, task_ids=list(chosen), **_selection(args))
            out.write(_counts_line(counts) + "\n")
            return EXIT_FAILURE if missing else EXIT_OK
        sent = _Deliveries()
        unrecorded = 0
        if chosen:
            _ensure_replay_log(reader, config)
            producer = make_producer(config, **{"message.timeout.ms": int(args.timeout * 1000)})
            sent = _send_tasks(config, producer, chosen, args.timeout)
            unrecorded = _record(config, producer, chosen, sent, args.timeout)
    failed = [t for t in chosen if not sent.ok(t)]
    replayed = [t for t in chosen if sent.ok(t)]
    counts.update(replayed=len(replayed), failed=len(failed), unrecorded=unrecorded)
    for task_id in replayed:
        out.write(
            f"replayed {task_id} from {config.topics.dlq}:{_latest(chosen[task_id]).coordinate} "
            f"-> {sent.reports[task_id][1]}\n"
        )
    for task_id in failed:
        error = sent.reports.get(task_id, (None, None))[0]
        err.write(
            f"kafkapipe dlq replay: task {task_id} not delivered: {error or 'no delivery report in time'}\n"
        )
    if unrecorded:
        err.write(
            f"kafkapipe dlq replay: {unrecorded} replayed dead letter(s) could not be recorded in "
            f"{replay_log_topic(config)}; running replay again would send them again\n"
        )
    _audit(
        "replay",
        config,
        dry_run=False,
        counts=counts,
        task_ids=replayed,
        failed_task_ids=failed,
        **_selection(args),
    )
    out.write(_counts_line(counts) + "\n")
    return EXIT_FAILURE if failed or missing or unrecorded else EXIT_OK


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    if args.task_ids:
        return {
            "selection": "task_ids",
            "requested_task_ids": args.task_ids[:AUDIT_MAX_IDS],
            "include_acked": args.all,
        }
    if args.category is not None:
        return {"selection": "category", "category": args.category, "include_acked": args.all}
    return {"selection": "all_entries", "include_acked": args.all}


def _counts_line(counts: dict[str, int]) -> str:
    return " ".join(f"{name}={value}" for name, value in counts.items())


def cmd_ack(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO) -> int:
    if args.all == (args.partition is not None or args.offset is not None):
        raise UsageError("give either --partition P --offset O, or --all")
    if not args.all and (args.partition is None or args.offset is None or args.offset < 0):
        raise UsageError("--partition and --offset (>= 0) go together")
    topic = config.topics.dlq
    with Reader(config, args.timeout) as reader:
        parts = reader.require_partitions(topic)
        targets = _ack_targets(reader, args, parts)
        committed = reader.committed(topic, sorted(targets))
        moves, unchanged = {}, {}
        for partition, target in sorted(targets.items()):
            current = committed.get(partition)
            if current is not None and current >= target:
                unchanged[partition] = current
            elif target > 0:
                moves[partition] = target
        if moves:
            reader.commit(topic, moves)
    for partition, offset in moves.items():
        out.write(
            f"acknowledged {topic}[{partition}] up to offset {offset - 1} (review group "
            f"{review_group(config)} now at {offset})\n"
        )
    for partition, current in unchanged.items():
        out.write(
            f"{topic}[{partition}] is already acknowledged up to offset {current - 1}; "
            "ack never moves backwards\n"
        )
    fields: dict[str, Any] = {
        "committed": {str(p): o for p, o in moves.items()},
        "unchanged": {str(p): o for p, o in unchanged.items()},
        "counts": {"moved": len(moves), "unchanged": len(unchanged)},
    }
    if not args.all:
        fields.update(partition=args.partition, offset=args.offset)
    _audit("ack", config, all_partitions=args.all, **fields)
    return EXIT_OK


def _ack_targets(reader: Reader, args: argparse.Namespace, parts: list[int]) -> dict[int, int]:
    topic = reader.config.topics.dlq
    if args.all:
        return {p: reader.watermarks(topic, p)[1] for p in parts}
    if args.partition not in parts:
        raise UsageError(f"{topic} has no partition {args.partition} (partitions: 0..{len(parts) - 1})")
    high = reader.watermarks(topic, args.partition)[1]
    if args.offset >= high:
        raise UsageError(f"{topic}[{args.partition}] has no offset {args.offset} (next offset is {high})")
    return {args.partition: args.offset + 1}


COMMANDS = {"list": cmd_list, "show": cmd_show, "replay": cmd_replay, "ack": cmd_ack}


# ------------------------------------------------------------------------------ wiring
def _identity(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return parser


def add_parser(
    subparsers: Any,
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] = _identity,
) -> argparse.ArgumentParser:
    """Add ``dlq`` and its subcommands; ``with_config`` adds the caller's ``--config`` to each."""
    parser = subparsers.add_parser("dlq", help="inspect, replay and acknowledge download dead letters")
    add_subcommands(parser, with_config)
    return parser


def add_subcommands(
    parser: argparse.ArgumentParser,
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] = _identity,
) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long without progress from the broker (default 30)",
    )
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,replay,ack}")

    lst = with_config(sub.add_parser("list", parents=[common], help="list dead letters"))
    lst.add_argument("--category", help="only this error category (or 'undecodable')")
    lst.add_argument(
        "--since", metavar="RFC3339|DURATION", help="failed at or after this time (or e.g. 2h ago)"
    )
    lst.add_argument("--limit", type=int, metavar="N", help="show at most N entries")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.add_argument("--all", action="store_true", help="include acknowledged entries")
    lst.add_argument("--reveal-url", action="store_true", help="show attachment URLs with their query string")

    show = with_config(sub.add_parser("show", parents=[common], help="one dead letter in full"))
    show.add_argument("ref", metavar="TASK_ID|PARTITION:OFFSET")
    show.add_argument("--all", action="store_true", help="search acknowledged entries too (by task id)")
    show.add_argument(
        "--reveal-url", action="store_true", help="show the attachment URL with its query string"
    )

    replay = with_config(sub.add_parser("replay", parents=[common], help="send dead letters back to pending"))
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--task-id",
        dest="task_ids",
        action="extend",
        nargs="+",
        metavar="ID",
        help="these tasks' dead letters",
    )
    which.add_argument("--category", help="every dead letter of this error category")
    which.add_argument("--all-entries", action="store_true", help="every dead letter")
    replay.add_argument("--all", action="store_true", help="include acknowledged entries")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed, send nothing")

    ack = with_config(sub.add_parser("ack", parents=[common], help="mark dead letters as reviewed"))
    ack.add_argument("--partition", type=int, metavar="P")
    ack.add_argument("--offset", type=int, metavar="O", help="acknowledge up to and including this offset")
    ack.add_argument("--all", action="store_true", help="acknowledge everything up to the current end")


def _ensure_logging(config: Config) -> None:
    if not logging.getLogger().handlers:
        logmod.setup(config.logging.level, config.logging.format)


def run(
    args: argparse.Namespace, config: Config, out: TextIO | None = None, err: TextIO | None = None
) -> int:
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
    except (DlqError, KafkaException) as exc:
        err.write(f"kafkapipe dlq {command}: {exc}\n")
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """``python -m kafkapipe.dlq --config FILE list …`` without the full command line."""
    from kafkapipe import config as configmod
    from kafkapipe.errors import ConfigError

    parser = argparse.ArgumentParser(prog="python -m kafkapipe.dlq")
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="pipeline TOML file (default: defaults)"
    )
    add_subcommands(parser)
    args = parser.parse_args(argv)
    try:
        config = configmod.load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"kafkapipe dlq: {exc}\n")
        return EXIT_USAGE
    logmod.setup(config.logging.level, config.logging.format)
    return run(args, config)


if __name__ == "__main__":
    sys.exit(main())
