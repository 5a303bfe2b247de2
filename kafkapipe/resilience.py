"""Per-host circuit breakers and exponential backoff with full jitter.

A host that keeps failing should stop costing connections and attempts: after
``failure_threshold`` consecutive counting failures its circuit opens, and
tasks for it are routed to the first retry topic *without* using up an
attempt (CONTRACT §3, ``circuit_open``). After ``reset_timeout`` one probe
request is let through (half-open); its outcome closes or re-opens the
circuit. Only the caller knows which outcomes say something about the host's
health, so it reports them: :meth:`CircuitBreakers.record_failure` for
transient failures (connect errors, timeouts, 5xx, 429), and
:meth:`CircuitBreakers.record_success` for any answer that proves the host is
up — including a 404, which is the task's problem, not the host's.
Retry-After is parsed where responses are classified
(:func:`kafkapipe.download.classify.parse_retry_after`).

Breakers live inside one download process and are shared by its threads;
every process keeps its own (the metric uses ``livemax`` across them).
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable

from kafkapipe.errors import CircuitOpenError
from kafkapipe.metrics import CIRCUIT_STATE


class CircuitState(enum.IntEnum):
    """Values match the ``kafkapipe_circuit_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def _check_settings(failure_threshold: int, reset_timeout: float) -> None:
    if failure_threshold < 1:
        raise ValueError("failure_threshold must be >= 1")
    if reset_timeout <= 0:
        raise ValueError("reset_timeout must be > 0")


class CircuitBreaker:
    """One host's circuit; thread-safe.

    Half-open admits exactly one probe. If the probe's outcome is never
    reported (its thread died), another probe is admitted once
    ``reset_timeout`` has passed since the first, so a lost report cannot
    leave the host shut out for good.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        host: str = "",
    ) -> None:
        _check_settings(failure_threshold, reset_timeout)
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    @property
    def idle(self) -> bool:
        """Closed with no failures counted: indistinguishable from a new breaker."""
        with self._lock:
            return self._state is CircuitState.CLOSED and self._failures == 0

    def before(self) -> None:
        """Raise :class:`CircuitOpenError` unless a request to this host may go ahead."""
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.CLOSED:
                return
            if self._state is CircuitState.OPEN:
                remaining = self._opened_at + self.reset_timeout - now
                if remaining > 0:
                    raise self._rejected(remaining)
                self._set(CircuitState.HALF_OPEN)
                self._probe_at = now
                return
            # Half-open: one probe is out; admit another only if that one was lost.
            if self._probe_at is not None and now - self._probe_at < self.reset_timeout:
                raise self._rejected(self._probe_at + self.reset_timeout - now)
            self._probe_at = now

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_at = None
            if self._state is not CircuitState.CLOSED:
                self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.HALF_OPEN:
                self._open(now)
            elif self._state is CircuitState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open(now)
            # Already open: a late report from a request admitted before it opened
            # must not push the reopening further out.

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_at = None
        self._failures = 0
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        self._state = state
        if self.host:
            CIRCUIT_STATE.labels(host=self.host).set(int(state))

    def _rejected(self, remaining: float) -> CircuitOpenError:
        name = self.host or "host"
        return CircuitOpenError(
            f"circuit open for {name}: too many recent failures; next probe in {remaining:.1f}s",
            retry_after=max(0.0, remaining),
        )


class CircuitBreakers:
    """The per-host registry the download threads share.

    Idle breakers (closed, no failures) are dropped once there are more than
    ``max_hosts`` of them, so suffix allow-lists with many distinct hosts do not
    grow memory without bound; forgetting an idle breaker loses nothing.
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        max_hosts: int = 10_000,
    ) -> None:
        _check_settings(failure_threshold, reset_timeout)
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.max_hosts = max_hosts
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, host: str) -> CircuitBreaker:
        key = host.lower()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                if len(self._breakers) >= self.max_hosts:
                    self._prune()
                breaker = CircuitBreaker(self.failure_threshold, self.reset_timeout, self._clock, host=key)
                self._breakers[key] = breaker
            return breaker

    def before(self, host: str) -> None:
        """Raise :class:`CircuitOpenError` if ``host``'s circuit rejects the request."""
        self.get(host).before()

    def record_success(self, host: str) -> None:
        self.get(host).record_success()

    def record_failure(self, host: str) -> None:
        """Count one transient failure (connect error, timeout, 5xx, 429) against ``host``."""
        self.get(host).record_failure()

    def state(self, host: str) -> CircuitState:
        with self._lock:
            breaker = self._breakers.get(host.lower())
        return CircuitState.CLOSED if breaker is None else breaker.state

    def _prune(self) -> None:
        for key in [k for k, b in self._breakers.items() if b.idle]:
            del self._breakers[key]


_MAX_EXPONENT = 64


def backoff(attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): "full jitter".

    A uniform draw from ``[0, min(cap, base * 2**attempt))``, which spreads
    retries of many clients that failed together instead of bunching them.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return max(0.0, ceiling * jitter())
