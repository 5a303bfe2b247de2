"""Topic creation for `kafkapipe topics create` and tests (idempotent)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from kafkapipe.config import Config
from kafkapipe.dlq import replay_log_spec
from kafkapipe.kafka.clients import make_admin

log = logging.getLogger(__name__)


def create_topics(config: Config, timeout: float = 30.0) -> dict[str, str]:
    """Create every configured topic; returns topic → "created" | "exists"."""
    admin = make_admin(config)
    topics = config.topics
    wanted = [
        NewTopic(name, num_partitions=topics.partitions, replication_factor=topics.replication_factor)
        for name in topics.all
    ]
    wanted.append(replay_log_spec(config))  # the replay log of `kafkapipe dlq replay`
    outcome: dict[str, str] = {}
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            outcome[name] = "exists"
    return outcome
