"""The largest message the pipeline can produce to a topic.

The producer refuses anything above its ``message.max.bytes`` before
sending; the broker refuses a record batch above the topic's
``max.message.bytes``. The smaller of the two is what a dead letter must fit.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from kafkapipe.config import Config
from kafkapipe.kafka.clients import make_admin, producer_config

log = logging.getLogger(__name__)

PRODUCER_DEFAULT = 1_000_000  # librdkafka's message.max.bytes
LOOKUP_TIMEOUT = 10.0


def producer_limit(config: Config) -> int:
    return int(producer_config(config).get("message.max.bytes", PRODUCER_DEFAULT))


def topic_limit(admin: AdminClient, topic: str, timeout: float = LOOKUP_TIMEOUT) -> int | None:
    """The topic's ``max.message.bytes``, or None when it cannot be read (no ACL, no broker)."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        future = admin.describe_configs([resource], request_timeout=timeout)[resource]
        entry = future.result(timeout=timeout).get("max.message.bytes")
        return int(entry.value) if entry is not None and entry.value else None
    except (KafkaException, ValueError, TimeoutError) as exc:
        log.warning("could not read max.message.bytes of %s: %s", topic, exc)
        return None


def max_message_bytes(config: Config, topic: str) -> int:
    """What a message to ``topic`` may weigh: the producer's limit, lowered by the topic's own."""
    limit = producer_limit(config)
    found = topic_limit(make_admin(config), topic)
    return min(limit, found) if found else limit
