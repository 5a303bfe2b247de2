"""Producing a batch and learning, from delivery reports, which of its messages made it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen
from confluent_kafka import KafkaError, Message


@frozen
class Outgoing:
    """One message to produce; ``ident`` names its delivery report."""

    ident: str
    topic: str
    key: str | bytes | None  # bytes and None are sent as they are
    value: bytes
    headers: list | None = None


class Deliveries:
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

    def error(self, ident: str) -> KafkaError | None:
        return self.reports.get(ident, (None, None))[0]

    def where(self, ident: str) -> str | None:
        """``<topic>:<partition>:<offset>`` of a delivered message."""
        return self.reports[ident][1]


def deliver(
    producer: Any,
    messages: Iterable[Outgoing],
    timeout: float,
    *,
    rate: float | None = None,
    progress: Callable[[int, Deliveries], None] | None = None,
) -> Deliveries:
    """Produce every message (at most ``rate`` a second), then wait up to ``timeout`` + 5 s for the reports.

    ``progress(produced, deliveries)`` is called after each message.
    """
    deliveries = Deliveries()
    started = time.monotonic()
    for produced, message in enumerate(messages, 1):
        if rate:
            # Paced from the start, so a slow broker does not make the next ones burst.
            pause = started + (produced - 1) / rate - time.monotonic()
            producer.poll(max(0.0, pause))
        _produce(producer, message, deliveries.callback(message.ident))
        producer.poll(0)
        if progress is not None:
            progress(produced, deliveries)
    producer.flush(timeout + 5)
    return deliveries


def _produce(producer: Any, message: Outgoing, on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
    while True:
        try:
            producer.produce(
                message.topic,
                key=message.key.encode() if isinstance(message.key, str) else message.key,
                value=message.value,
                headers=message.headers,
                on_delivery=on_delivery,
            )
            return
        except BufferError:  # the local queue is full: serve delivery reports to make room
            producer.poll(0.1)
