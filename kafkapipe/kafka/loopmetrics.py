"""The consume loop's metrics, with label children kept and counts added once per iteration.

In multiprocess mode every ``inc``/``set``/``observe`` writes to an mmap'd file (and asks
``getpid`` to notice a fork), and every ``labels()`` looks the child up again: per message,
that was a tenth of the ingest stage's CPU. Counts gathered here are written by :meth:`flush`,
which the loop calls after each poll; what a scrape sees lags by at most one iteration.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from kafkapipe import metrics

if TYPE_CHECKING:
    import prometheus_client


class LoopMetrics:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._consumed: dict[str, prometheus_client.Counter] = {}
        self._produced: dict[str, prometheus_client.Counter] = {}
        self._pending_produced: Counter[str] = Counter()
        self._in_flight = metrics.IN_FLIGHT.labels(stage)
        self._in_flight_value = -1
        self._processing = metrics.PROCESSING_SECONDS.labels(stage)

    def consumed(self, topic: str, count: int) -> None:
        child = self._consumed.get(topic)
        if child is None:
            child = self._consumed[topic] = metrics.MESSAGES_CONSUMED.labels(self.stage, topic)
        child.inc(count)

    def produced(self, topic: str) -> None:
        self._pending_produced[topic] += 1

    def processing(self, seconds: float) -> None:
        self._processing.observe(seconds)

    def in_flight(self, count: int) -> None:
        if count != self._in_flight_value:
            self._in_flight.set(count)
            self._in_flight_value = count

    def flush(self) -> None:
        """Write the produced counts gathered since the last flush."""
        for topic, count in self._pending_produced.items():
            child = self._produced.get(topic)
            if child is None:
                child = self._produced[topic] = metrics.MESSAGES_PRODUCED.labels(self.stage, topic)
            child.inc(count)
        self._pending_produced.clear()
