"""Where a task goes after an attempt (CONTRACT §3), in one place.

Every attempt yields a DownloadResult on the results topic; a transient
failure also yields the task on the next retry topic, and a permanent one
(or a transient one out of retries) a FailedDownload on the DLQ.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from kafkapipe import metrics
from kafkapipe.config import TopicsConfig
from kafkapipe.errors import ErrorCategory
from kafkapipe.kafka.clients import headers
from kafkapipe.kafka.loop import Output
from kafkapipe.messages import (
    SCHEMA_FAILED,
    SCHEMA_RESULT,
    SCHEMA_TASK,
    STATUS_PERMANENT,
    STATUS_SUCCESS,
    STATUS_TRANSIENT,
    DownloadTask,
    ErrorInfo,
    FailedDownload,
    dumps,
    evolve,
    result_for,
    utcnow,
)

# Spread retries of a burst of failures; never earlier than the topic's delay.
MAX_JITTER = 30.0
JITTER_FRACTION = 0.1


def retry_at_for(delay: float, retry_after: float | None, now: float, rand: float) -> float:
    """Epoch seconds: at least ``delay`` and at least Retry-After from now, plus jitter."""
    base = max(delay, retry_after or 0.0)
    return now + base + rand * min(MAX_JITTER, base * JITTER_FRACTION)


class Outcomes:
    def __init__(self, topics: TopicsConfig, stage: str, rand=random.random, clock=time.time) -> None:
        self.topics = topics
        self.stage = stage
        self._rand = rand
        self._clock = clock

    def result(self, task: DownloadTask, status: str, started: float, **fields) -> Output:
        result = result_for(task, status, started=started, finished=time.monotonic(), **fields)
        category = result.error_category or ""
        metrics.DOWNLOADS.labels(status, category).inc()
        return Output(self.topics.results, task.task_id, dumps(result),
                      headers(SCHEMA_RESULT, task.trace_id, task.task_id))

    def success(self, task: DownloadTask, started: float, **fields) -> list[Output]:
        return [self.result(task, STATUS_SUCCESS, started, **fields)]

    def permanent(
        self, task: DownloadTask, error: ErrorInfo, started: float, http_status: int | None = None
    ) -> list[Output]:
        failed = FailedDownload(
            task=task,
            error_category=error.category,
            error_message=error.message,
            attempts=task.retry_count + 1,
            failed_at=utcnow(),
            stage=self.stage,
        )
        metrics.DEAD_LETTERS.labels(self.stage, error.category).inc()
        dlq_headers = headers(
            SCHEMA_FAILED, task.trace_id, task.task_id,
            **{"error-category": error.category, "error-message": error.message[:1024]},
        )
        return [
            self.result(task, STATUS_PERMANENT, started, http_status=http_status, error=error),
            Output(self.topics.dlq, task.task_id, dumps(failed), dlq_headers),
        ]

    def transient(
        self,
        task: DownloadTask,
        error: ErrorInfo,
        started: float,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> list[Output]:
        if task.retry_count >= len(self.topics.retry_delays):
            return self.permanent(task, error, started, http_status)
        index = self._topic_for(task.retry_count, retry_after)
        routed = self._route(task, index, error, retry_after, task.retry_count + 1)
        result = self.result(task, STATUS_TRANSIENT, started, http_status=http_status, error=error)
        return [result, routed]

    def _topic_for(self, first: int, retry_after: float | None) -> int:
        """The first retry topic from ``first`` on whose delay covers Retry-After.

        Due times rise along a retry partition only if every message on it waits about the
        topic's own delay; a long Retry-After parked on a short topic would hold up every
        task behind it. Only on the last topic may a task wait longer than the delay.
        """
        last = len(self.topics.retry_delays) - 1
        for index in range(first, last):
            if self.topics.retry_delay_seconds(index) >= (retry_after or 0.0):
                return index
        return last

    topic_for = _topic_for  # public: `migrate retry-queue` routes a legacy wait by the same rule

    def circuit_open(self, task: DownloadTask, error: ErrorInfo, started: float) -> list[Output]:
        """Back to the first retry topic, keeping ``retry_count``: no attempt was made."""
        routed = self._route(task, 0, error, None, task.retry_count)
        result = self.result(task, STATUS_TRANSIENT, started, error=error)
        return [result, routed]

    def _route(
        self, task: DownloadTask, index: int, error: ErrorInfo, retry_after: float | None, retry_count: int
    ) -> Output:
        due = retry_at_for(self.topics.retry_delay_seconds(index), retry_after, self._clock(), self._rand())
        retried = evolve(
            task,
            retry_count=retry_count,
            retry_at=datetime.fromtimestamp(due, UTC),
            last_error=error,
        )
        topic = self.topics.retry_topic(index)
        metrics.RETRIES_ROUTED.labels(topic, error.category).inc()
        return Output(
            topic, task.task_id, dumps(retried),
            headers(SCHEMA_TASK, task.trace_id, task.task_id, **{"retry-at": str(int(due * 1000))}),
        )


def error_info(category: ErrorCategory | str, message: str) -> ErrorInfo:
    return ErrorInfo(str(category), message)


def raw_dead_letter(msg, topic: str, stage: str, reason: str, trace_id: str | None = None) -> Output:
    """A message we cannot read, kept byte for byte, with the reason and its origin in headers."""
    metrics.DEAD_LETTERS.labels(stage, ErrorCategory.VALIDATION).inc()
    extra = {
        "error-category": str(ErrorCategory.VALIDATION),
        "error-message": reason[:1024],
        "source-topic": msg.topic(),
        "source-partition": str(msg.partition()),
        "source-offset": str(msg.offset()),
    }
    kept = [(k, v) for k, v in (msg.headers() or []) if k not in extra]
    if trace_id is not None and all(k != "trace_id" for k, _ in kept):
        kept.extend(headers(None, trace_id))
    return Output(topic, msg.key(), msg.value() or b"", [*kept, *headers(None, None, **extra)])
