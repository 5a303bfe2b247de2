"""An in-memory consumer and producer with the few calls the consume loop makes, for its unit tests.

Nothing runs by itself: a test assigns and revokes partitions, drives the loop one iteration at a
time and decides when the producer's delivery reports arrive, so every interleaving is chosen and
repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from confluent_kafka import KafkaError, KafkaException, TopicPartition


@attrs.define(eq=False)
class FakeMessage:
    """A consumed message: what ``confluent_kafka.Message`` offers the loop."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None = b"{}"
    _key: bytes | None = None
    _headers: list | None = None
    _error: KafkaError | None = None

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def error(self):
        return self._error


class FakeConsumer:
    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[tuple[bytes | None, list | None]]] = {}
        self.position_of: dict[tuple[str, int], int] = {}
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.stored: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.errors: list[KafkaError] = []
        self.consume_calls = 0
        self.closed = False
        self.callbacks: dict[str, Callable] = {}

    # ------------------------------------------------------------ the test's side
    def add(self, topic: str, partition: int, value: bytes | None = b"{}", headers: list | None = None) -> int:
        log = self.logs.setdefault((topic, partition), [])
        log.append((value, headers))
        return len(log) - 1

    def assign(self, *keys: tuple[str, int]) -> None:
        for key in keys:
            self.assigned.add(key)
            self.position_of[key] = self.committed.get(key, 0)
        self.callbacks["on_assign"](self, [TopicPartition(t, p) for t, p in keys])

    def revoke(self, *keys: tuple[str, int]) -> None:
        self.callbacks["on_revoke"](self, [TopicPartition(t, p) for t, p in keys])
        self._unassign(keys)

    def lose(self, *keys: tuple[str, int]) -> None:
        self.callbacks["on_lost"](self, [TopicPartition(t, p) for t, p in keys])
        self._unassign(keys)

    def _unassign(self, keys) -> None:
        for key in keys:
            self.assigned.discard(key)
            self.stored.pop(key, None)

    # ------------------------------------------------------------ the loop's side
    def subscribe(self, topics, on_assign, on_revoke, on_lost) -> None:
        self.callbacks = {"on_assign": on_assign, "on_revoke": on_revoke, "on_lost": on_lost}

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list:
        self.consume_calls += 1
        out: list = [FakeMessage("", -1, -1, None, error=e) for e in self.errors]
        self.errors.clear()
        for key in sorted(self.assigned - self.paused):
            log = self.logs.get(key, [])
            while self.position_of[key] < len(log) and len(out) < num_messages:
                offset = self.position_of[key]
                value, headers = log[offset]
                out.append(FakeMessage(key[0], key[1], offset, value, headers=headers))
                self.position_of[key] = offset + 1
        return out

    def pause(self, tps) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, tps) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def seek(self, tp) -> None:
        self.position_of[(tp.topic, tp.partition)] = tp.offset

    def store_offsets(self, offsets) -> None:
        for tp in offsets:
            key = (tp.topic, tp.partition)
            if key not in self.assigned:
                raise KafkaException(KafkaError(KafkaError._STATE))
            self.stored[key] = tp.offset

    def commit(self, asynchronous: bool = True) -> None:
        if not self.stored:
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET))
        self.committed.update(self.stored)

    def position(self, tps):
        return [TopicPartition(tp.topic, tp.partition, self.position_of.get((tp.topic, tp.partition), 0))
                for tp in tps]

    def get_watermark_offsets(self, tp, cached: bool = False):
        return 0, len(self.logs.get((tp.topic, tp.partition), []))

    def close(self) -> None:
        self.closed = True


@attrs.define
class Produced:
    topic: str
    key: object
    value: bytes
    headers: list
    on_delivery: Callable

    def header(self, name: str) -> bytes | None:
        return dict(self.headers or []).get(name)


class FakeProducer:
    """Keeps what is produced; reports delivery only when the test says (or on poll if ``auto_ack``)."""

    def __init__(self, auto_ack: bool = True, max_bytes: int = 1_000_000) -> None:
        self.auto_ack = auto_ack
        self.max_bytes = max_bytes
        self.produced: list[Produced] = []
        self.unacked: list[Produced] = []
        self.refuse: Callable[[Produced], KafkaError | None] = lambda p: None

    def produce(self, topic, value=None, key=None, headers=None, on_delivery=None) -> None:
        size = len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers or [])
        if size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        record = Produced(topic, key, value, list(headers or []), on_delivery)
        self.produced.append(record)
        self.unacked.append(record)

    def poll(self, timeout: float = 0) -> int:
        return self.ack_all() if self.auto_ack else 0

    def flush(self, timeout: float = 0) -> int:
        self.ack_all()
        return 0

    def ack_all(self) -> int:
        acked, self.unacked = self.unacked, []
        for record in acked:
            record.on_delivery(self.refuse(record), None)
        return len(acked)

    def on(self, topic: str) -> list[Produced]:
        return [p for p in self.produced if p.topic == topic]
