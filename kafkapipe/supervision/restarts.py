"""When to restart a stage's worker, and when to give up — the way gunicorn's arbiter decides.

A worker that had become ready and then died (any signal, any exit status) is
restarted at once: a crash storm of OOM kills or ``kill -9`` costs rebalances,
never the pipeline. Such deaths get their own short backoff, which resets once
a worker of the stage has been ready for ``healthy_after`` seconds.

Only boot failures — a worker that ended by its own doing before it became
ready (an exit status, a fault signal such as SIGSEGV, a hang at boot) — count
towards the crash loop: more than ``crash_loop_restarts`` of them within
``crash_loop_window`` seconds and the supervisor gives up, so systemd's restart
policy decides what next. A worker killed from outside while booting (SIGKILL,
SIGTERM …) is no evidence that the stage cannot start: it is restarted like a
runtime death, with the short backoff. (While the broker is down nothing becomes
ready, so under an OOM or ``kill -9`` storm every kill would otherwise climb the
boot backoff to its 30 s cap.)
"""

from __future__ import annotations

import collections
import enum
import signal

import attrs

from kafkapipe.backoff import exponential
from kafkapipe.config import SupervisorConfig

BOOT_BACKOFF_BASE = 1.0
RUNTIME_BACKOFF_BASE = 0.25
# Signals a process raises against itself when its own code is broken.
FAULT_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})


class ExitKind(enum.Enum):
    RUNTIME = "runtime"  # died after it had become ready
    BOOT_FAILURE = "boot_failure"  # ended before ready by its own doing
    KILLED_BOOTING = "killed_booting"  # killed from outside before it was ready


def classify_exit(code: int, was_ready: bool, stale: bool) -> ExitKind:
    """What a worker's exit says about its stage; ``code`` as ``os.waitstatus_to_exitcode`` gives it.

    ``stale``: the supervisor killed it for a silent heartbeat (a hang is the worker's own doing).
    """
    if was_ready:
        return ExitKind.RUNTIME
    if stale or code >= 0 or -code in FAULT_SIGNALS:
        return ExitKind.BOOT_FAILURE
    return ExitKind.KILLED_BOOTING


def backoff_delay(failures: int, base: float, maximum: float) -> float:
    """Wait before restarting after ``failures`` failures in a row: 0, base, 2·base, 4·base … ≤ maximum.

    The first failure restarts at once: a single crash (an OOM kill, a
    ``kill -9``) should cost one rebalance, not a pause.
    """
    if failures <= 1:
        return 0.0
    return exponential(failures - 2, base, maximum)


@attrs.define
class Backoff:
    """Consecutive failures of one kind and the delay they earn."""

    base: float
    maximum: float
    consecutive: int = 0

    def fail(self) -> float:
        self.consecutive += 1
        return backoff_delay(self.consecutive, self.base, self.maximum)

    def reset(self) -> None:
        self.consecutive = 0


@attrs.define
class RestartPolicy:
    """Per-stage restart bookkeeping: two backoffs (boot failures, everything else) and crash-loop detection."""

    max_restarts: int
    window: float
    healthy_after: float
    boot: Backoff
    runtime: Backoff
    not_before: float = 0.0
    boot_failures: collections.deque[float] = attrs.Factory(collections.deque)

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> RestartPolicy:
        return cls(
            config.crash_loop_restarts, config.crash_loop_window, config.healthy_after,
            Backoff(BOOT_BACKOFF_BASE, config.restart_backoff_max),
            Backoff(RUNTIME_BACKOFF_BASE, config.runtime_restart_backoff_max),
        )

    def configure(self, config: SupervisorConfig) -> None:
        self.max_restarts = config.crash_loop_restarts
        self.window = config.crash_loop_window
        self.healthy_after = config.healthy_after
        self.boot.maximum = config.restart_backoff_max
        self.runtime.maximum = config.runtime_restart_backoff_max

    def record_exit(self, now: float, kind: ExitKind, ready_for: float = 0.0) -> float:
        """Note an unplanned exit; returns the delay before the next spawn of this stage.

        ``ready_for``: how long the worker had been ready (runtime deaths only).
        """
        if kind is ExitKind.BOOT_FAILURE:
            delay = self.boot.fail()
            self.boot_failures.append(now)
        else:
            if ready_for >= self.healthy_after:
                self.runtime.reset()
            delay = self.runtime.fail()
        self._prune(now)
        self.not_before = max(self.not_before, now + delay)
        return delay

    def record_ready(self) -> None:
        """A worker of the stage became ready: the stage can boot, boot backoff starts over."""
        self.boot.reset()

    def may_spawn(self, now: float) -> bool:
        return now >= self.not_before

    def crash_looping(self, now: float) -> bool:
        return self.recent_failures(now) > self.max_restarts

    def recent_failures(self, now: float) -> int:
        """Boot failures within the crash-loop window."""
        self._prune(now)
        return len(self.boot_failures)

    def _prune(self, now: float) -> None:
        while self.boot_failures and now - self.boot_failures[0] > self.window:
            self.boot_failures.popleft()
