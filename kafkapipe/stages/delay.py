"""delay: retry topics → pending, each task when its ``retry_at`` is due.

Within one retry topic every message carries the same delay, so due times
only rise along a partition and waiting on the head is right. A head that
is not due makes the loop rewind the partition to it, pause it, and resume
it at the due time: no sleeping on a message, no re-producing it, no busy
loop. The task is forwarded byte for byte, once it has been read as a
valid task; what cannot be read is dead-lettered here.

Republishing also waits while the lag on the pending topic of the group the
registry says this stage watches (the download group) is above
``stages.delay.max_pending_lag``, so a backlog of retries does not bury
fresh work.
"""

from __future__ import annotations

import logging
import re
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from kafkapipe.config import Config
from kafkapipe.kafka.clients import group_id, header_map, headers, make_consumer, partition_of
from kafkapipe.kafka.loop import Complete, Defer, Done, Output
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, InvalidMessage, loads
from kafkapipe.stages.dlqgauge import DlqGauge
from kafkapipe.stages.outcomes import latest_due, raw_dead_letter
from kafkapipe.stages.registry import SPECS

log = logging.getLogger(__name__)

LAG_CHECK_EVERY = 5.0
# At most one log line per this many seconds about due times too far ahead to be ours.
FAR_FUTURE_LOG_EVERY = 60.0


# Epoch milliseconds, ASCII digits only, at most 15 of them (past the year 30000): anything
# else in the header (``²``, 400 digits, a sign) is ignored and the task's own retry_at used.
_RETRY_AT = re.compile(r"[0-9]{1,15}")


def due_time(msg: Message) -> float:
    """Epoch seconds from the ``retry-at`` header; falls back to the task's ``retry_at``."""
    raw = header_map(msg.headers()).get("retry-at")
    if raw is not None and _RETRY_AT.fullmatch(raw):
        return int(raw) / 1000.0
    task = loads(msg.value() or b"", DownloadTask)
    return task.retry_at.timestamp() if task.retry_at else 0.0


class DelayStage:
    name = "delay"
    # Its backlog is retries waiting to be due: reported as kafkapipe_retry_waiting, not lag.
    lag_is_waiting = True
    max_batch = 500
    batch_timeout = 1.0

    def __init__(self, config: Config, clock=time.time) -> None:
        self.config = config
        spec = SPECS[self.name]
        self.topics = spec.topics(config)
        # The registry names the stage whose backlog gates republishing (the download stage).
        self.lag_group = group_id(config, spec.watches[0])
        self.pending = config.topics.pending
        self.dlq = config.topics.dlq
        self.dead_letter_topic = config.topics.dlq
        self.max_lag = config.stages.delay.max_pending_lag
        self._clock = clock
        self._lag_probe: Consumer | None = None
        self._next_lag_check = 0.0
        self._held = 0.0
        self._dlq_gauge = DlqGauge(config).start()
        self._max_retry_after = config.download.max_retry_after
        self._delays = {
            config.topics.retry_topic(i): config.topics.retry_delay_seconds(i)
            for i in range(len(config.topics.retry_delays))
        }
        self._next_far_log = 0.0

    def _due(self, msg: Message, now: float) -> float:
        """The message's due time; one further ahead than any retry of ours could be is due now."""
        due = due_time(msg)
        topic, _ = partition_of(msg)
        delay = self._delays.get(topic, max(self._delays.values(), default=0.0))
        if due <= latest_due(now, delay, self._max_retry_after):
            return due
        if time.monotonic() >= self._next_far_log:
            self._next_far_log = time.monotonic() + FAR_FUTURE_LOG_EVERY
            log.warning("retry due %.0f s from now is further ahead than any retry of %s: forwarded now",
                        due - now, topic, extra={"topic": topic, "partition": msg.partition(),
                                                 "offset": msg.offset()})
        return now

    def handle(self, messages: list[Message], complete: Complete) -> None:
        now = self._clock()
        waiting: set[tuple[str, int]] = set()
        for msg in messages:
            key = partition_of(msg)
            if key in waiting:  # rewound with its head; it will be consumed again
                continue
            try:
                due = self._due(msg, now)
                forward = None if due > now else self._forward(msg)
            except InvalidMessage as exc:
                complete(msg, Done([raw_dead_letter(msg, self.dlq, self.name, str(exc))]))
                continue
            if forward is None:
                waiting.add(key)
                complete(msg, Defer(due))
            else:
                complete(msg, Done([forward]))

    def _forward(self, msg: Message) -> Output:
        """The task as it came, once it is known to be one: nothing unreadable reaches pending."""
        loads(msg.value() or b"", DownloadTask)
        meta = header_map(msg.headers())
        out_headers = headers(SCHEMA_TASK, meta.get("trace_id"), meta.get("task_id"))
        return Output(self.pending, msg.key(), msg.value() or b"", out_headers)

    def hold(self) -> float:
        """Pause all retry partitions while the downloaders are far behind."""
        if not self.max_lag:
            return 0.0
        now = time.monotonic()
        if now >= self._next_lag_check:
            self._next_lag_check = now + LAG_CHECK_EVERY
            lag = self.pending_lag()
            self._held = LAG_CHECK_EVERY if lag is not None and lag > self.max_lag else 0.0
            if self._held:
                log.info("pending lag %d above %d: holding retries", lag, self.max_lag)
        return self._held

    def pending_lag(self) -> int | None:
        """Sum over pending partitions of high watermark − the download group's commit."""
        if self._lag_probe is None:
            # Never subscribes: only reads the download group's committed offsets.
            self._lag_probe = make_consumer(self.config, self.lag_group)
        try:
            meta = self._lag_probe.list_topics(self.pending, timeout=5)
            parts = [TopicPartition(self.pending, p) for p in meta.topics[self.pending].partitions]
            committed = self._lag_probe.committed(parts, timeout=5)
            total = 0
            for tp in committed:
                low, high = self._lag_probe.get_watermark_offsets(tp, timeout=5)
                total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return total
        except KafkaException as exc:
            log.warning("could not read pending lag: %s", exc)
            return None

    def close(self) -> None:
        self._dlq_gauge.close()
        if self._lag_probe is not None:
            self._lag_probe.close()
