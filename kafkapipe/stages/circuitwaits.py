"""How long a task has waited on open circuits, kept in the task's metadata.

A task turned away by an open circuit waits for the host's probe without using an attempt, but
not forever: after ``max_circuit_waits`` waits, or ``max_circuit_wait`` seconds since its first,
the next rejection is a transient failure like any other, so every task reaches a verdict. The
count travels with the task (``metadata``) because each wait is a hop through a retry topic.
"""

from __future__ import annotations

import math

import attrs

from kafkapipe.messages import DownloadTask, evolve

WAITS = "circuit_waits"
SINCE = "circuit_wait_since"


@attrs.frozen
class CircuitWaits:
    count: int
    since: float | None  # epoch seconds of the first wait

    @classmethod
    def of(cls, task: DownloadTask) -> CircuitWaits | None:
        """The task's waits so far; None when its metadata holds something unreadable."""
        raw_count, raw_since = task.metadata.get(WAITS), task.metadata.get(SINCE)
        try:
            count = int(raw_count) if raw_count is not None else 0
            since = float(raw_since) if raw_since is not None else None
        except (TypeError, ValueError, OverflowError):
            return None
        if count < 0 or (since is not None and not math.isfinite(since)):
            return None
        return cls(count, since)

    def exhausted(self, now: float, max_waits: int, max_wait: float) -> bool:
        return self.count >= max_waits or (self.since is not None and now - self.since >= max_wait)


def may_wait(task: DownloadTask, now: float, max_waits: int, max_wait: float) -> bool:
    """Whether a rejection by an open circuit may still be a wait (no attempt used)."""
    waits = CircuitWaits.of(task)
    return waits is not None and not waits.exhausted(now, max_waits, max_wait)


def one_more(task: DownloadTask, now: float) -> DownloadTask:
    """The task with one more circuit wait recorded."""
    waits = CircuitWaits.of(task) or CircuitWaits(0, None)
    since = waits.since if waits.since is not None else now
    return evolve(task, metadata={**task.metadata, WAITS: str(waits.count + 1), SINCE: f"{since:.3f}"})
