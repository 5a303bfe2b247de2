"""When to restart a stage's worker, and when to give up: exponential backoff and crash-loop detection."""

from __future__ import annotations

import collections

import attrs

from kafkapipe.config import SupervisorConfig


def backoff_delay(failures: int, base: float, maximum: float) -> float:
    """Wait before restarting after ``failures`` failures in a row: 0, base, 2·base, 4·base … ≤ maximum.

    The first failure restarts at once: a single crash (an OOM kill, a
    ``kill -9``) should cost one rebalance, not a pause.
    """
    if failures <= 1:
        return 0.0
    return min(maximum, base * 2.0 ** (failures - 2))


@attrs.define
class RestartPolicy:
    """Per-stage restart bookkeeping: exponential backoff and crash-loop detection.

    Every unplanned exit counts at once, boot failures included; more than
    ``max_restarts`` of them inside ``window`` seconds is a crash loop, and
    the supervisor gives up so systemd's restart policy decides what next.
    A worker that ran for a whole window before dying resets the backoff.
    """

    backoff_max: float
    max_restarts: int
    window: float
    base: float = 1.0
    consecutive: int = 0
    not_before: float = 0.0
    failures: collections.deque[float] = attrs.Factory(collections.deque)

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> RestartPolicy:
        return cls(config.restart_backoff_max, config.crash_loop_restarts, config.crash_loop_window)

    def configure(self, config: SupervisorConfig) -> None:
        self.backoff_max = config.restart_backoff_max
        self.max_restarts = config.crash_loop_restarts
        self.window = config.crash_loop_window

    def record_failure(self, now: float, uptime: float, boot_error: bool = False) -> float:
        """Note a failure; returns the delay before the next spawn of this stage."""
        if uptime >= self.window and not boot_error:
            self.consecutive = 0
        self.consecutive += 1
        self.failures.append(now)
        self._prune(now)
        delay = backoff_delay(self.consecutive, self.base, self.backoff_max)
        self.not_before = now + delay
        return delay

    def may_spawn(self, now: float) -> bool:
        return now >= self.not_before

    def crash_looping(self, now: float) -> bool:
        self._prune(now)
        return len(self.failures) > self.max_restarts

    def recent_failures(self, now: float) -> int:
        self._prune(now)
        return len(self.failures)

    def _prune(self, now: float) -> None:
        while self.failures and now - self.failures[0] > self.window:
            self.failures.popleft()
