"""Where a migrated task goes (docs/contract.md §3 applied to a legacy row), in one place.

- the presigned URL has expired → DLQ, ``expired`` (a replay with a fresh URL is the way out);
- retries used up (``retry_count`` ≥ the number of retry topics) → DLQ, ``permanent``, legacy error;
- due now or earlier → pending;
- otherwise the retry topic whose delay covers the remaining wait (``Outcomes.topic_for``), with
  ``retry-at`` = the legacy due time;
- a due time further ahead than any retry of ours could be is cut to the latest one could
  (``latest_due``, on the longest retry topic): the delay stage forwards anything later at once.

The outputs are the pipeline's own: ``Outcomes.permanent`` for the DLQ (with its failed result),
the contract's headers for tasks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from attrs import frozen

from kafkapipe.config import Config
from kafkapipe.errors import ExpiredError
from kafkapipe.kafka.clients import headers
from kafkapipe.kafka.loop import Output
from kafkapipe.messages import SCHEMA_TASK, ErrorInfo, dumps, evolve
from kafkapipe.migrate.legacy import LegacyTask
from kafkapipe.security.presigned import check_expiry
from kafkapipe.stages.outcomes import Outcomes, latest_due

STAGE = "migrate"
PENDING, RETRY, DLQ_PERMANENT, DLQ_EXPIRED = "pending", "retry", "dlq permanent", "dlq expired"
ROUTES = (PENDING, RETRY, DLQ_PERMANENT, DLQ_EXPIRED)


@frozen
class Planned:
    legacy: LegacyTask
    route: str
    topic: str
    outputs: list[Output]
    due: datetime | None = None  # retry: the retry-at

    @property
    def task_id(self) -> str:
        return self.legacy.task.task_id


class Router:
    def __init__(self, config: Config, now: float | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self.outcomes = Outcomes(config.topics, STAGE)
        self.now = time.time() if now is None else now

    def plan(self, legacy: LegacyTask) -> Planned:
        task = legacy.task
        try:
            check_expiry(task.attachment_url, self.now, self.config.download.clock_skew)
        except ExpiredError as exc:
            return self._dead(legacy, DLQ_EXPIRED, ErrorInfo("expired", exc.message))
        if task.retry_count >= len(self.topics.retry_delays):
            message = task.last_error.message if task.last_error else "retries used up in the legacy pipeline"
            return self._dead(legacy, DLQ_PERMANENT, ErrorInfo("permanent", message))
        due = legacy.due.timestamp() if legacy.due is not None else self.now
        longest = max((self.topics.retry_delay_seconds(i) for i in range(len(self.topics.retry_delays))), default=0.0)
        due = min(due, latest_due(self.now, longest, self.config.download.max_retry_after))
        if due <= self.now:
            output = Output(self.topics.pending, task.task_id, dumps(task),
                            headers(SCHEMA_TASK, task.trace_id, task.task_id))
            return Planned(legacy, PENDING, self.topics.pending, [output])
        return self._retry(legacy, due)

    def _retry(self, legacy: LegacyTask, due: float) -> Planned:
        index = self.outcomes.topic_for(0, due - self.now)
        topic = self.topics.retry_topic(index)
        at = datetime.fromtimestamp(due, UTC)
        task = evolve(legacy.task, retry_at=at)
        extra = {"retry-at": str(int(due * 1000))}
        output = Output(topic, task.task_id, dumps(task), headers(SCHEMA_TASK, task.trace_id, task.task_id, **extra))
        return Planned(legacy, RETRY, topic, [output], at)

    def _dead(self, legacy: LegacyTask, route: str, error: ErrorInfo) -> Planned:
        outputs = self.outcomes.permanent(legacy.task, error, time.monotonic())
        return Planned(legacy, route, self.topics.dlq, outputs)
