"""The migration log: which legacy rows were migrated, so a second run of the same source sends nothing.

The replay log's mechanism (``dlq/replaylog.py``) applied to migration: a compacted one-partition
topic ``<pending topic>.migrated``, keyed by task id, read in full with the DLQ tool's bounded
reader before a run, and written only after the broker acknowledged every output of the task
(a crash in between re-sends that task next time, which the idempotent task id makes harmless).
"""

from __future__ import annotations

import orjson
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from kafkapipe.config import Config
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.sending import Outgoing
from kafkapipe.kafka.clients import make_admin


class MigrateError(Exception):
    """The run cannot go on (broker, topic); the text says what failed."""


def log_topic(config: Config) -> str:
    return f"{config.topics.pending}.migrated"


def read_migrated(reader: Reader) -> set[str]:
    """Task ids the log holds; empty when it does not exist yet."""
    topic = log_topic(reader.config)
    done: set[str] = set()
    if reader.partitions(topic) is None:
        return done
    for partition, start, end in reader.ranges(topic, include_acked=True):
        for msg in reader.scan(topic, partition, start, end):
            key = (msg.key() or b"").decode("utf-8", "replace")
            if msg.value() is None:
                done.discard(key)
            else:
                done.add(key)
    return done


def ensure_log(reader: Reader, config: Config) -> None:
    topic = log_topic(config)
    if reader.partitions(topic) is not None:
        return
    spec = NewTopic(topic, num_partitions=1, replication_factor=config.topics.replication_factor,
                    config={"cleanup.policy": "compact"})
    admin = make_admin(config)  # held: the futures fail if the client is collected first
    try:
        admin.create_topics([spec], request_timeout=reader.timeout)[topic].result(reader.timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise MigrateError(f"cannot create the migration log {topic} (compacted, 1 partition): {exc}") from None


def mark(config: Config, task_id: str, row: int, route: str, source: str, at: str, user: str) -> Outgoing:
    value = {"task_id": task_id, "row": row, "route": route, "source": source, "migrated_at": at, "user": user}
    return Outgoing(ident=f"log:{task_id}", topic=log_topic(config), key=task_id, value=orjson.dumps(value))
