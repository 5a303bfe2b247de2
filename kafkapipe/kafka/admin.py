"""Topic creation for `kafkapipe topics create` and tests (idempotent).

Dead letters are the only record of a task that could not be done, so both DLQ topics are created
with ``retention.ms`` = ``topics.dlq_retention_ms`` (default -1: kept until acknowledged and
deleted by an operator), and an existing DLQ that would let them expire is reported.
"""

from __future__ import annotations

import logging

import attrs
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from kafkapipe.config import Config
from kafkapipe.dlq import replay_log_spec
from kafkapipe.kafka.clients import make_admin

log = logging.getLogger(__name__)


@attrs.frozen
class TopicsCreated:
    outcome: dict[str, str]  # topic → "created" | "exists"
    warnings: list[str] = attrs.field(factory=list)


def dlq_topics(config: Config) -> list[str]:
    return [config.topics.dlq, config.topics.events_dlq]


def topic_specs(config: Config) -> list[NewTopic]:
    topics = config.topics
    dlqs = set(dlq_topics(config))
    retention = {"retention.ms": str(topics.dlq_retention_ms)}
    specs = [
        NewTopic(name, num_partitions=topics.partitions, replication_factor=topics.replication_factor,
                 config=retention if name in dlqs else {})
        for name in topics.all
    ]
    specs.append(replay_log_spec(config))  # the replay log of `kafkapipe dlq replay`
    return specs


def create_topics(config: Config, timeout: float = 30.0) -> TopicsCreated:
    """Create every configured topic; say which existed and which existing DLQ lets dead letters expire."""
    admin = make_admin(config)
    outcome: dict[str, str] = {}
    for name, future in admin.create_topics(topic_specs(config), request_timeout=timeout).items():
        try:
            future.result(timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcome[name] = "exists"
    existing = [name for name in dlq_topics(config) if outcome.get(name) == "exists"]
    return TopicsCreated(outcome, retention_warnings(admin, existing, config.topics.dlq_retention_ms, timeout))


def retention_warnings(admin: AdminClient, topics: list[str], wanted_ms: int, timeout: float) -> list[str]:
    """One warning per DLQ topic whose ``retention.ms`` is finite where ``wanted_ms`` keeps messages longer."""
    if not topics:
        return []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    warnings = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = future.result(timeout).get("retention.ms")
        current = int(entry.value) if entry is not None and entry.value is not None else -1
        if current >= 0 and (wanted_ms < 0 or current < wanted_ms):
            warnings.append(
                f"dead-letter topic {resource.name} has retention.ms={current} ({current / 86_400_000:.1f} days): "
                f"dead letters older than that are deleted unseen; set it to {wanted_ms} "
                f"(kafka-configs --alter --entity-type topics --entity-name {resource.name} "
                f"--add-config retention.ms={wanted_ms})"
            )
    return warnings
