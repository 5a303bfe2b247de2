"""librdkafka configuration for every client the pipeline creates.

Clients must be created after ``fork()`` (librdkafka threads do not survive
it), so these functions only build dictionaries; callers construct the
clients in the process that uses them.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, cast

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from kafkapipe.config import Config, is_event_hubs
from kafkapipe.messages import SCHEMA_FAILED, SCHEMA_RESULT, SCHEMA_TASK

# Event Hubs' recommendations for Kafka clients: shorter sessions or request timeouts time out
# consumers, which rebalances the group, which times out more of them.
EVENT_HUBS_CONSUMER = {"session.timeout.ms": 30000}
EVENT_HUBS_PRODUCER = {"request.timeout.ms": 60000}


def _common(config: Config) -> dict[str, Any]:
    kafka = config.kafka
    settings: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
        "client.id": f"kafkapipe-{socket.gethostname()}-{os.getpid()}",
        # librdkafka's own messages become our JSON log lines, not raw text on stderr.
        "logger": logging.getLogger("kafkapipe.librdkafka"),
    }
    if kafka.security_protocol.startswith("SASL"):
        settings["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_mechanism == "OAUTHBEARER":
            from kafkapipe.auth.kafka_oauth import make_oauth_cb

            settings["oauth_cb"] = make_oauth_cb(kafka.oauth)
    return settings


def consumer_config(config: Config, group_id: str, **overrides: Any) -> dict[str, Any]:
    settings = {
        **_common(config),
        "group.id": group_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        # Offsets are stored by the consume loop only once work and outputs are done.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": False,
        # A killed worker's partitions move to the others after this long.
        "session.timeout.ms": 10000,
        "max.poll.interval.ms": 300000,
        **(EVENT_HUBS_CONSUMER if is_event_hubs(config.kafka.bootstrap_servers) else {}),
        **config.kafka.consumer,
        **overrides,
    }
    return settings


def producer_config(config: Config, **overrides: Any) -> dict[str, Any]:
    return {
        **_common(config),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": compression(config),
        **(EVENT_HUBS_PRODUCER if is_event_hubs(config.kafka.bootstrap_servers) else {}),
        **config.kafka.producer,
        **overrides,
    }


def compression(config: Config) -> str:
    """``kafka.compression``, with "auto" resolved: none for Event Hubs, else lz4."""
    chosen = config.kafka.compression
    if chosen != "auto":
        return chosen
    return "none" if is_event_hubs(config.kafka.bootstrap_servers) else "lz4"


def make_consumer(config: Config, group_id: str, **overrides: Any) -> Consumer:
    consumer = Consumer(consumer_config(config, group_id, **overrides))
    return consumer


def make_producer(config: Config, **overrides: Any) -> Producer:
    producer = Producer(producer_config(config, **overrides))
    # oauth_cb runs from poll() on older clients: one poll fetches the first token.
    producer.poll(0)
    return producer


def make_admin(config: Config) -> AdminClient:
    return AdminClient(_common(config))


def group_id(config: Config, stage: str) -> str:
    return f"{config.kafka.group_prefix}.{stage}"


def headers(schema: str | None, trace_id: str | None, task_id: str | None = None, **extra: str) -> list:
    """The contract's headers: trace_id, task_id, kafkapipe-schema, plus any extras."""
    out: list[tuple[str, bytes]] = [] if trace_id is None else [("trace_id", trace_id.encode())]
    if task_id is not None:
        out.append(("task_id", task_id.encode()))
    if schema is not None:
        out.append(_SCHEMA_HEADERS.get(schema) or ("kafkapipe-schema", schema.encode()))
    if extra:
        out.extend((k, v.encode()) for k, v in extra.items())
    return out


# Built once: one of these goes with every message the pipeline writes (tuples, shared safely).
_SCHEMA_HEADERS = {s: ("kafkapipe-schema", s.encode()) for s in (SCHEMA_TASK, SCHEMA_RESULT, SCHEMA_FAILED)}


def partition_of(msg: Message) -> tuple[str, int]:
    """(topic, partition) of a consumed message: both are set on every message without an error."""
    return cast(str, msg.topic()), cast(int, msg.partition())


def offset_of(msg: Message) -> int:
    """The offset of a consumed message: set on every message without an error."""
    offset = msg.offset()
    assert offset is not None, "a consumed message without an error has an offset"
    return offset


def header_map(raw: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in raw or []:
        if value is not None:
            result[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return result
