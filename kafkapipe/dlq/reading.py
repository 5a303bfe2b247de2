"""Bounded reads of the DLQ (and the replay log) with the review group's assign-only consumer.

The tool never subscribes: it ``assign()``\\ s each partition of ``topics.dlq``
from the review group's committed offset (``--all``: from the low watermark)
up to the high watermark taken when it started, so it always terminates, and
it never commits except in ``ack``. The review group is
``<group_prefix>.dlq-review``; its committed offset is the operator's
"reviewed up to here" mark, which ``ack`` moves (forwards only). Undecodable
entries are listed as category ``undecodable`` with the reason; they cannot
be replayed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafkapipe.config import Config
from kafkapipe.dlq.entries import DeadLetter, decode
from kafkapipe.dlq.errors import DlqError
from kafkapipe.kafka.clients import group_id, make_consumer, offset_of
from kafkapipe.resilience import backoff

log = logging.getLogger("kafkapipe.dlq")

REVIEW_STAGE = "dlq-review"
# Consumer errors that pass by themselves: keep polling.
_PASSING = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}
# Coordinator and leader call failures worth retrying until the timeout.
_RETRY_CALL = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
}


def review_group(config: Config) -> str:
    return group_id(config, REVIEW_STAGE)


class Reader:
    """Bounded reads of the DLQ and the replay log with one assign-only consumer."""

    def __init__(self, config: Config, timeout: float, group: str | None = None) -> None:
        """``group``: whose committed offsets :meth:`committed` reads (default: the review group)."""
        self.config = config
        self.timeout = timeout
        self.group = group or review_group(config)
        self.consumer: Consumer = make_consumer(
            config,
            self.group,
            **{
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # Partitions are read one after another: a long-polling fetch for the
                # previous one would hold up the next by up to its wait.
                "fetch.wait.max.ms": 25,
            },
        )

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()

    # -------------------------------------------------------------------------- metadata and offsets
    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions, or None when it does not exist."""
        metadata = self.consumer.list_topics(topic, timeout=self.timeout)
        found = metadata.topics.get(topic)
        if found is None:
            return None
        if found.error is not None:
            if found.error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                return None
            raise DlqError(f"metadata for {topic}: {found.error.str()}")
        return sorted(found.partitions)

    def require_partitions(self, topic: str) -> list[int]:
        parts = self.partitions(topic)
        if parts is None:
            raise DlqError(f"topic {topic} does not exist (kafkapipe topics create makes it)")
        return parts

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        tp = TopicPartition(topic, partition)
        return self._retrying(
            f"reading the watermarks of {topic}[{partition}]",
            lambda: self.consumer.get_watermark_offsets(tp, timeout=self.timeout, cached=False),
        )

    def committed(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        def fetch() -> list[TopicPartition]:
            found = self.consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=self.timeout)
            return _raise_partition_errors(found)

        found = self._retrying(f"reading the committed offsets of {self.group}", fetch)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}

    def commit(self, topic: str, offsets: dict[int, int]) -> None:
        wanted = [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
        self._retrying(
            f"committing {self.group}",
            lambda: _raise_partition_errors(self.consumer.commit(offsets=wanted, asynchronous=False)),
        )

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """Coordinator and leader calls fail while either moves or loads: retry until the timeout."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() not in _RETRY_CALL and not error.retriable():
                    raise DlqError(f"{what}: {error.str()}") from None
                pause = backoff(attempt, base=0.1, cap=2.0)
                if time.monotonic() + pause > deadline:
                    raise DlqError(f"{what}: {error.str()} (still failing after {self.timeout:g}s)") from None
                log.debug("%s: %s; retrying", what, error.str())
                time.sleep(pause)
                attempt += 1

    # -------------------------------------------------------------------------- messages
    def ranges(self, topic: str, include_acked: bool) -> list[tuple[int, int, int]]:
        """(partition, start, end) to read, with every end taken now, before reading."""
        parts = self.require_partitions(topic)
        committed = {} if include_acked else self.committed(topic, parts)
        out = []
        for p in parts:
            low, high = self.watermarks(topic, p)
            mark = committed.get(p)
            start = low if mark is None else max(low, mark)
            if start < high:
                out.append((p, start, high))
        return out

    def offsets_at(self, topic: str, partitions: list[int], at_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``at_ms`` (-1: none)."""
        wanted = [TopicPartition(topic, p, at_ms) for p in partitions]
        found = self._retrying(
            f"looking up offsets by time in {topic}",
            lambda: _raise_partition_errors(self.consumer.offsets_for_times(wanted, timeout=self.timeout)),
        )
        return {tp.partition: tp.offset for tp in found}

    def recent(self, topic: str, since_ms: int | None) -> Iterator[Message]:
        """Every message of ``topic`` written at or after ``since_ms`` (None: all); nothing if no topic."""
        parts = self.partitions(topic)
        if not parts:
            return
        starts = self.offsets_at(topic, parts, since_ms) if since_ms is not None else {}
        for partition in parts:
            low, high = self.watermarks(topic, partition)
            start = starts.get(partition, low)
            start = high if start < 0 else max(low, start)
            if start < high:
                yield from self.scan(topic, partition, start, high)

    def scan(self, topic: str, partition: int, start: int, end: int) -> Iterator[Message]:
        """Messages of one partition in ``[start, end)``; gives up after ``timeout`` s without progress."""
        self.consumer.assign([TopicPartition(topic, partition, start)])
        try:
            yield from self._poll_until(topic, partition, end)
        finally:
            self.consumer.unassign()

    def _poll_until(self, topic: str, partition: int, end: int) -> Iterator[Message]:
        last_progress = time.monotonic()
        while True:
            msg = self.consumer.poll(0.2)
            if msg is None:
                if time.monotonic() - last_progress > self.timeout:
                    raise DlqError(f"no progress reading {topic}[{partition}] for {self.timeout:g}s")
                continue
            error = msg.error()
            if error is not None:
                if _reached_end(msg, error, topic, partition):
                    return
                continue
            if (msg.topic(), msg.partition()) != (topic, partition):
                continue  # left over from a previous assignment
            offset = offset_of(msg)
            if offset >= end:
                return
            last_progress = time.monotonic()
            yield msg
            if offset >= end - 1:
                return

    def dead_letters(self, include_acked: bool, topic: str | None = None) -> Iterator[DeadLetter]:
        topic = topic or self.config.topics.dlq
        event = topic == self.config.topics.events_dlq
        for partition, start, end in self.ranges(topic, include_acked):
            for msg in self.scan(topic, partition, start, end):
                yield decode(msg, event)

    def dead_letter_at(self, partition: int, offset: int, topic: str | None = None) -> DeadLetter | None:
        topic = topic or self.config.topics.dlq
        if partition not in self.require_partitions(topic):
            return None
        low, high = self.watermarks(topic, partition)
        if not low <= offset < high:
            return None
        for msg in self.scan(topic, partition, offset, offset + 1):
            return decode(msg, topic == self.config.topics.events_dlq) if msg.offset() == offset else None
        return None


def _reached_end(msg: Message, error: KafkaError, topic: str, partition: int) -> bool:
    """For a message carrying ``error``: the end of the partition being read, a passing error, or a DlqError."""
    if error.code() == KafkaError._PARTITION_EOF:
        return (msg.topic(), msg.partition()) == (topic, partition)
    if error.code() in _PASSING or (error.retriable() and not error.fatal()):
        log.debug("transient consumer error: %s", error.str())
        return False
    raise DlqError(f"reading {topic}[{partition}]: {error.str()}")


def _raise_partition_errors(tps: list[TopicPartition] | None) -> list[TopicPartition]:
    for tp in tps or []:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return list(tps or [])
