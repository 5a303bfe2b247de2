"""Per-host circuit breakers and exponential backoff with full jitter.

A host that is failing should stop costing connections and attempts, but a
host that fails *some* of its URLs is not failing: the circuit opens on the
host's failure **rate** over a sliding window of recent calls, once the
window holds a minimum number of them (as Resilience4j's
failureRateThreshold / minimumNumberOfCalls / slidingWindowSize). The window
keeps the latest outcome per URL, so one URL retried many times counts once:
only failures across distinct URLs say something about the host.

While open, tasks for the host are turned away without a request and
without using an attempt (``circuit_open``); after ``reset_timeout`` one
probe request is let through (half-open) and its outcome closes or re-opens
the circuit. Only the caller knows which outcomes speak about the host, so
it reports them: :meth:`CircuitBreakers.record_failure` for connect errors,
timeouts, resets, 5xx and 429; :meth:`CircuitBreakers.record_success` for any
answer that proves the host is up, including a 404 (the URL's problem).
Failures of our own storage are reported as neither.

Breakers live inside one download process and are shared by its threads.
The ``kafkapipe_circuit_state`` gauge has a series only for hosts whose
circuit is not closed: closing removes it, so the series count stays bounded
by the hosts in trouble, not by every host ever seen.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable

import attrs

from kafkapipe import metrics
from kafkapipe.backoff import backoff  # noqa: F401 - re-exported for its callers
from kafkapipe.errors import CircuitOpenError


class CircuitState(enum.IntEnum):
    """Values match the ``kafkapipe_circuit_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def _check_rate(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1]")


def _check_positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0")


@attrs.frozen
class CircuitSettings:
    """When a host's circuit opens and how long it stays open."""

    failure_rate: float = attrs.field(default=0.5, validator=_check_rate)
    minimum_calls: int = attrs.field(default=10, validator=_check_positive)
    window_size: int = attrs.field(default=50, validator=_check_positive)
    reset_timeout: float = attrs.field(default=30.0, validator=_check_positive)

    def __attrs_post_init__(self) -> None:
        if self.minimum_calls > self.window_size:
            raise ValueError("minimum_calls must be <= window_size")


class CircuitBreaker:
    """One host's circuit; thread-safe.

    Half-open admits exactly one probe. If the probe's outcome is never
    reported (its thread died), another probe is admitted once
    ``reset_timeout`` has passed since the first, so a lost report cannot
    leave the host shut out for good.
    """

    def __init__(
        self, settings: CircuitSettings, clock: Callable[[], float] = time.monotonic, host: str = ""
    ) -> None:
        self.settings = settings
        self.host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._window: collections.OrderedDict[str, bool] = collections.OrderedDict()  # url → failed
        self._opened_at = 0.0
        self._probe_at: float | None = None

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    @property
    def idle(self) -> bool:
        """Closed with no failure in the window: forgetting it loses nothing that matters."""
        with self._lock:
            return self._state is CircuitState.CLOSED and not any(self._window.values())

    def before(self) -> None:
        """Raise :class:`CircuitOpenError` unless a request to this host may go ahead."""
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.CLOSED:
                return
            if self._state is CircuitState.OPEN:
                remaining = self._opened_at + self.settings.reset_timeout - now
                if remaining > 0:
                    raise self._rejected(remaining)
                self._set(CircuitState.HALF_OPEN)
                self._probe_at = now
                return
            # Half-open: one probe is out; admit another only if that one was lost.
            if self._probe_at is not None and now - self._probe_at < self.settings.reset_timeout:
                raise self._rejected(self._probe_at + self.settings.reset_timeout - now)
            self._probe_at = now

    def record_success(self, url: str = "") -> None:
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._close()
            elif self._state is CircuitState.CLOSED:
                self._note(url, failed=False)
            # Open: a late success of a request admitted before it opened does not close it.

    def record_failure(self, url: str = "") -> None:
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._open(self._clock())
            elif self._state is CircuitState.CLOSED:
                self._note(url, failed=True)
                if self._tripped():
                    self._open(self._clock())
            # Already open: a late report from a request admitted before it opened
            # must not push the reopening further out.

    def _note(self, url: str, *, failed: bool) -> None:
        self._window.pop(url, None)  # the latest outcome of a URL replaces its earlier one
        self._window[url] = failed
        while len(self._window) > self.settings.window_size:
            self._window.popitem(last=False)

    def _tripped(self) -> bool:
        calls = len(self._window)
        if calls < self.settings.minimum_calls:
            return False
        failures = sum(self._window.values())
        return failures / calls >= self.settings.failure_rate

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_at = None
        self._window.clear()
        self._set(CircuitState.OPEN)

    def _close(self) -> None:
        self._probe_at = None
        self._window.clear()
        self._set(CircuitState.CLOSED)

    def _set(self, state: CircuitState) -> None:
        self._state = state
        if not self.host:
            return
        if state is CircuitState.CLOSED:
            _remove_series(self.host)
        else:
            metrics.CIRCUIT_STATE.labels(host=self.host).set(int(state))

    def _rejected(self, remaining: float) -> CircuitOpenError:
        name = self.host or "host"
        return CircuitOpenError(
            f"circuit open for {name}: too many recent failures; next probe in {remaining:.1f}s",
            retry_after=max(0.0, remaining),
        )


def _remove_series(host: str) -> None:
    try:
        metrics.CIRCUIT_STATE.remove(host)
    except KeyError:  # never had a series: it was never open
        pass


class CircuitBreakers:
    """The per-host registry the download threads share.

    Idle breakers (closed, no failure in the window) are dropped once there
    are more than ``max_hosts`` of them, so suffix allow-lists with many
    distinct hosts do not grow memory without bound.
    """

    def __init__(
        self,
        settings: CircuitSettings,
        clock: Callable[[], float] = time.monotonic,
        max_hosts: int = 10_000,
    ) -> None:
        self.settings = settings
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
                breaker = CircuitBreaker(self.settings, self._clock, host=key)
                self._breakers[key] = breaker
            return breaker

    def before(self, host: str) -> None:
        """Raise :class:`CircuitOpenError` if ``host``'s circuit rejects the request."""
        self.get(host).before()

    def record_success(self, host: str, url: str = "") -> None:
        self.get(host).record_success(url)

    def record_failure(self, host: str, url: str = "") -> None:
        """Count one failure of ``url`` that speaks about ``host`` (connect error, timeout, 5xx, 429)."""
        self.get(host).record_failure(url)

    def state(self, host: str) -> CircuitState:
        with self._lock:
            breaker = self._breakers.get(host.lower())
        return CircuitState.CLOSED if breaker is None else breaker.state

    def _prune(self) -> None:
        for key in [k for k, b in self._breakers.items() if b.idle]:
            del self._breakers[key]
