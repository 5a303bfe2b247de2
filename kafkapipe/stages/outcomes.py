"""Where a task goes after an attempt, in one place.

Every attempt yields a DownloadResult on the results topic; a transient
failure also yields the task on the next retry topic, and a permanent one
(or a transient one out of retries) a FailedDownload on the DLQ.
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime

from kafkapipe import metrics
from kafkapipe.config import TopicsConfig
from kafkapipe.kafka.clients import headers
from kafkapipe.kafka.deadletter import raw_dead_letter
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

__all__ = ["Outcomes", "capped_retry_after", "latest_due", "raw_dead_letter", "retry_at_for"]

# Spread retries of a burst of failures; never earlier than the topic's delay.
MAX_JITTER = 30.0
JITTER_FRACTION = 0.1
DEFAULT_MAX_RETRY_AFTER = 3600.0


def capped_retry_after(retry_after: float | None, cap: float) -> float | None:
    """A server's Retry-After we will honour: none if not a finite positive number, at most ``cap``."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, cap)


def retry_at_for(delay: float, retry_after: float | None, now: float, rand: float) -> float:
    """Epoch seconds: at least ``delay`` and at least Retry-After from now, plus jitter."""
    base = max(delay, retry_after or 0.0)
    return now + base + rand * min(MAX_JITTER, base * JITTER_FRACTION)


def latest_due(now: float, delay: float, max_retry_after: float) -> float:
    """The latest a retry of ours, on a topic of ``delay``, can be due: epoch seconds.

    A retry waits its topic's ``delay``, or the longest Retry-After honoured
    (``max_retry_after``), plus at most :data:`MAX_JITTER`. A due time later than this
    (a far-future ``retry-at``, a legacy due time years ahead) is none of ours and must
    not hold a partition until then.
    """
    return now + delay + max_retry_after + MAX_JITTER


class Outcomes:
    def __init__(
        self,
        topics: TopicsConfig,
        stage: str,
        rand=random.random,
        clock=time.time,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        self.topics = topics
        self.stage = stage
        self.max_retry_after = max_retry_after
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
        # Above the cap a Retry-After is not obeyed to the letter: a transient failure retried at the cap.
        retry_after = capped_retry_after(retry_after, self.max_retry_after)
        index = self._topic_for(max(0, task.retry_count), retry_after)
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

    def circuit_open(
        self, task: DownloadTask, error: ErrorInfo, started: float, retry_after: float | None = None
    ) -> list[Output]:
        """Wait for the host's probe (``retry_after``), keeping ``retry_count``: no attempt was made.

        The wait goes on the first retry topic whose delay covers it, like a Retry-After.
        """
        routed = self._route(task, self._topic_for(0, retry_after), error, retry_after, task.retry_count)
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
