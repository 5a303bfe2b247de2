"""``kafkapipe offsets reset``: move a stage's consumer group to a time, the start or the end of its topics.

The plan (per partition: committed → new) is always computed and shown; it is applied only when
asked, and never while the group has live members — a running worker would overwrite the new
offsets with its own on its next commit. Applying goes through the admin API
(``alter_consumer_group_offsets``), which the broker itself refuses for a non-empty group.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from attrs import frozen
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from kafkapipe.config import Config, TopicsConfig
from kafkapipe.kafka.clients import group_id, make_admin, make_consumer

# What each stage consumes, as each stage's constructor states it (stages/*.py ``self.topics``).
STAGE_TOPICS: dict[str, Callable[[TopicsConfig], list[str]]] = {
    "ingest": lambda t: [t.events],
    "download": lambda t: [t.pending],
    "delay": lambda t: list(t.retry_topics),
    "results": lambda t: [t.results],
}
TIMEOUT = 30.0


class ResetError(Exception):
    """The reset cannot be planned or applied; the text says why."""


@frozen
class Move:
    topic: str
    partition: int
    current: int | None  # None: nothing committed
    new: int


@frozen
class Target:
    """Exactly one of: a time, the earliest offset, the latest offset."""

    when: datetime | None = None
    earliest: bool = False

    def describe(self) -> str:
        return self.when.isoformat() if self.when else "earliest" if self.earliest else "latest"


def live_members(config: Config, group: str) -> list[str]:
    """``client_id@host`` of each member the broker knows for ``group``."""
    admin = make_admin(config)
    try:
        described = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    except KafkaException as exc:
        raise ResetError(f"cannot describe consumer group {group}: {exc.args[0].str()}") from None
    return [f"{m.client_id}@{m.host}" for m in described.members]


def plan(config: Config, stage: str, target: Target) -> list[Move]:
    group = group_id(config, stage)
    consumer = make_consumer(config, group, **{"enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t in STAGE_TOPICS[stage](config.topics) for p in _partitions(consumer, t)]
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=TIMEOUT)}
        marks = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=TIMEOUT, cached=False)
                 for tp in parts}
        times = _offsets_at(consumer, parts, target.when) if target.when else {}
    finally:
        consumer.close()
    moves = []
    for tp in parts:
        key = (tp.topic, tp.partition)
        low, high = marks[key]
        new = times.get(key, high) if target.when else low if target.earliest else high
        current = committed[key]
        moves.append(Move(tp.topic, tp.partition, current if current >= 0 else None, max(low, min(new, high))))
    return moves


def _partitions(consumer, topic: str) -> list[int]:
    found = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ResetError(f"topic {topic} does not exist")
    return sorted(found.partitions)


def _offsets_at(consumer, parts: list[TopicPartition], when: datetime) -> dict[tuple[str, int], int]:
    """The first offset at or after ``when`` per partition; -1 (none that late) means the end."""
    ms = int(when.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, ms) for tp in parts], timeout=TIMEOUT)
    return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}


def apply(config: Config, stage: str, moves: list[Move]) -> None:
    group = group_id(config, stage)
    members = live_members(config, group)
    if members:
        raise ResetError(f"consumer group {group} has {len(members)} live member(s) "
                         f"({', '.join(members[:5])}): stop the stage's workers first")
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(m.topic, m.partition, m.new) for m in moves])
    admin = make_admin(config)
    try:
        result = admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    except KafkaException as exc:
        raise ResetError(f"cannot move consumer group {group}: {exc.args[0].str()}") from None
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise ResetError(f"moving {group}: {failed[0].topic}[{failed[0].partition}]: {failed[0].error.str()}")
