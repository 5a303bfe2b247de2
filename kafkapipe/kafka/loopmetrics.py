"""The consume loop's metrics, with label children kept and counts added once per iteration.

In multiprocess mode every ``inc``/``set``/``observe`` writes to an mmap'd file (and asks
``getpid`` to notice a fork), and every ``labels()`` looks the child up again: per message,
that was a tenth of the ingest stage's CPU. Counts and processing times gathered here are
written by :meth:`flush`, which the loop calls after each poll; what a scrape sees lags by at
most one iteration, and its counts are those of one write per observation (a sum of many
times added at once may differ from one added time by time in float rounding only).
"""

from __future__ import annotations

from bisect import bisect_left
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
        self._processing = ProcessingTimes(metrics.PROCESSING_SECONDS.labels(stage))

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
        """Write the produced counts and processing times gathered since the last flush."""
        for topic, count in self._pending_produced.items():
            child = self._produced.get(topic)
            if child is None:
                child = self._produced[topic] = metrics.MESSAGES_PRODUCED.labels(self.stage, topic)
            child.inc(count)
        self._pending_produced.clear()
        self._processing.flush()


class ProcessingTimes:
    """Observations of one histogram child, gathered in memory and written by :meth:`flush`.

    prometheus_client has no ``observe`` for many observations at once: this adds each
    bucket's count and the sum to the child's own values (``_buckets``, ``_sum``), as
    ``Histogram.observe`` does one observation at a time. A bucket holds the observations
    up to its bound that no lower bound holds (the exposition makes them cumulative).
    tests/unit/test_loopmetrics.py holds the totals equal to those of one ``observe`` per
    observation.
    """

    def __init__(self, child: prometheus_client.Histogram) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._any = False

    def observe(self, seconds: float) -> None:
        # The first bound not below the amount, as observe() picks it; a NaN counts in none.
        index = bisect_left(self._bounds, seconds)
        if seconds == seconds:
            self._counts[index] += 1
        self._sum += seconds
        self._any = True

    def flush(self) -> None:
        if not self._any:
            return
        self._child._sum.inc(self._sum)
        for index, count in enumerate(self._counts):
            if count:
                self._child._buckets[index].inc(count)
                self._counts[index] = 0
        self._sum = 0.0
        self._any = False
