"""Are the configured topics there, and does an unconfigured retry topic still hold work?

The supervisor asks before it forks any worker and before a reload changes the topics: a worker
subscribed to a missing topic just waits for an assignment that never comes, and a retry topic
dropped from ``topics.retry_delays`` while it still holds tasks would strand them, since only
configured retry topics are consumed by the delay stage.

Uses one short-lived consumer that never subscribes (it only reads metadata, watermarks and the
delay group's committed offsets) and is closed before returning, so no librdkafka thread is
left in the supervisor when it forks.
"""

from __future__ import annotations

import attrs
from confluent_kafka import Consumer, KafkaException, TopicPartition

from kafkapipe.config import Config
from kafkapipe.kafka.clients import group_id, make_consumer


class BrokerUnreachable(Exception):
    """No broker answered a metadata request in time."""


@attrs.frozen
class TopicCheck:
    missing: tuple[str, ...] = ()
    # Retry topics no longer configured → messages the delay stage has not moved out of them yet.
    stranded: dict[str, int] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stranded

    def problems(self, config_path: str) -> list[str]:
        out = []
        if self.missing:
            out.append(
                f"missing topic(s) {', '.join(self.missing)}: create them with "
                f"`kafkapipe topics create --config {config_path}`"
            )
        if self.stranded:
            held = ", ".join(f"{topic} ({count} message(s))" for topic, count in sorted(self.stranded.items()))
            out.append(
                f"retry topic(s) no longer in topics.retry_delays still hold tasks the delay stage has not "
                f"moved: {held}; keep their delays in retry_delays until they are empty"
            )
        return out


def check_topics(config: Config, timeout: float) -> TopicCheck:
    """Raises :class:`BrokerUnreachable` when no broker answers within ``timeout`` seconds."""
    consumer = make_consumer(config, group_id(config, "delay"), log_level=0, error_cb=lambda err: None)
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnreachable(
                f"no broker at {config.kafka.bootstrap_servers} answered within {timeout:g}s: {exc.args[0].str()}"
            ) from None
        present = {name for name, topic in metadata.topics.items() if topic.error is None}
        missing = tuple(name for name in config.topics.all if name not in present)
        prefix = config.topics.retry_prefix + "."
        dropped = sorted(
            name for name in present if name.startswith(prefix) and name not in config.topics.retry_topics
        )
        stranded = {}
        for topic in dropped:
            held = _unmoved(consumer, topic, len(metadata.topics[topic].partitions), timeout)
            if held:
                stranded[topic] = held
        return TopicCheck(missing, stranded)
    finally:
        consumer.close()


def _unmoved(consumer: Consumer, topic: str, partitions: int, timeout: float) -> int:
    """Messages on ``topic`` past the delay group's committed offsets (from the start if none)."""
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    total = 0
    for tp in consumer.committed(wanted, timeout=timeout):
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        total += max(0, high - max(tp.offset, low))
    return total
