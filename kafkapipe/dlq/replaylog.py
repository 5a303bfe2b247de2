"""The replay log: which dead letters were replayed, so that running ``replay`` twice sends nothing twice.

Selections by task id or category pick entries anywhere in the partition, so
committing the review group cannot record them without hiding the entries in
between. Instead, every replayed dead letter is recorded in the compacted
topic ``<dlq topic>.replayed`` (one partition, created on first use), keyed by
``"<partition>:<offset>"``, value ``{task_id, dlq_timestamp, replayed_at,
user, pending}``. ``replay`` reads the whole log first and skips every dead
letter that has a record with the same task id and DLQ timestamp (so a DLQ
topic that was deleted and re-created, reusing coordinates, is not mistaken
for replayed). Records are written only after the broker acknowledged the
replayed task: a crash between the two re-sends that task on the next run
(at-least-once, which the pipeline's idempotent tasks tolerate) but never
loses it. Two operators replaying the same entries at the same instant can
both send them, for the same reason and with the same harmless outcome.
"""

from __future__ import annotations

from typing import Any

import orjson
from attrs import frozen
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from kafkapipe.config import Config
from kafkapipe.dlq.audit import user
from kafkapipe.dlq.entries import DeadLetter
from kafkapipe.dlq.errors import DlqError
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.sending import Deliveries, Outgoing, deliver
from kafkapipe.kafka.clients import make_admin
from kafkapipe.messages import format_ts, utcnow


def replay_log_topic(config: Config, dlq_topic: str | None = None) -> str:
    """``<dlq>.replayed``; each DLQ (downloads, events) has its own."""
    return f"{dlq_topic or config.topics.dlq}.replayed"


def replay_log_spec(config: Config, dlq_topic: str | None = None) -> NewTopic:
    """The replay log as a topic to create: compacted, one partition."""
    return NewTopic(
        replay_log_topic(config, dlq_topic),
        num_partitions=1,
        replication_factor=config.topics.replication_factor,
        config={"cleanup.policy": "compact"},
    )


@frozen
class ReplayMark:
    """What the replay log holds for one replayed dead letter."""

    task_id: str
    dlq_timestamp: int | None
    replayed_at: str
    user: str
    pending: str | None = None

    def covers(self, entry: DeadLetter) -> bool:
        return self.task_id == entry.replay_id and self.dlq_timestamp == entry.timestamp_ms

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "task_id": self.task_id,
                "dlq_timestamp": self.dlq_timestamp,
                "replayed_at": self.replayed_at,
                "user": self.user,
                "pending": self.pending,
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> ReplayMark | None:
        try:
            data = orjson.loads(value)
            return cls(
                task_id=str(data["task_id"]),
                dlq_timestamp=data.get("dlq_timestamp"),
                replayed_at=str(data.get("replayed_at", "")),
                user=str(data.get("user", "")),
                pending=data.get("pending"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None


def read_marks(reader: Reader, dlq_topic: str | None = None) -> dict[str, ReplayMark]:
    """The replay log, last record per coordinate wins; empty when the log does not exist yet."""
    topic = replay_log_topic(reader.config, dlq_topic)
    marks: dict[str, ReplayMark] = {}
    if reader.partitions(topic) is None:
        return marks
    for partition, start, end in reader.ranges(topic, include_acked=True):
        for msg in reader.scan(topic, partition, start, end):
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            mark = ReplayMark.decode(value) if value is not None else None
            if mark is None:
                marks.pop(key, None)
            else:
                marks[key] = mark
    return marks


def mark_for(entry: DeadLetter, marks: dict[str, ReplayMark]) -> ReplayMark | None:
    """The record saying this very dead letter was replayed, if any."""
    mark = marks.get(entry.coordinate)
    return mark if mark is not None and mark.covers(entry) else None


def ensure_replay_log(reader: Reader, config: Config, dlq_topic: str | None = None) -> None:
    topic = replay_log_topic(config, dlq_topic)
    if reader.partitions(topic) is not None:
        return
    admin = make_admin(config)
    try:
        futures = admin.create_topics([replay_log_spec(config, dlq_topic)], request_timeout=reader.timeout)
        futures[topic].result(reader.timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise DlqError(f"cannot create the replay log {topic} (compacted, 1 partition): {exc}") from None


def record_replays(
    config: Config, producer: Any, chosen: dict[str, list[DeadLetter]], sent: Deliveries, timeout: float,
    dlq_topic: str | None = None,
) -> int:
    """Write the replay log for every entry of every delivered task; returns how many records failed."""
    topic = replay_log_topic(config, dlq_topic)
    replayed_at, by = format_ts(utcnow()), user()
    records = [
        Outgoing(
            ident=entry.coordinate,
            topic=topic,
            key=entry.coordinate,
            value=ReplayMark(task_id, entry.timestamp_ms, replayed_at, by, sent.where(task_id)).encode(),
        )
        for task_id, entries in chosen.items()
        if sent.ok(task_id)
        for entry in entries
    ]
    recorded = deliver(producer, records, timeout)
    return sum(1 for record in records if not recorded.ok(record.ident))
