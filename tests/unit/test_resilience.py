"""Circuit breaker state machine and backoff: pure logic, injected clock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from kafkapipe.errors import CircuitOpenError, ErrorCategory
from kafkapipe.resilience import (
    CircuitBreaker,
    CircuitBreakers,
    CircuitState,
    backoff,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def gauge(host: str) -> float | None:
    return REGISTRY.get_sample_value("kafkapipe_circuit_state", {"host": host})


def fail(breakers: CircuitBreakers, host: str, times: int) -> None:
    for _ in range(times):
        breakers.before(host)
        breakers.record_failure(host)


def test_closed_until_threshold_then_open(clock):
    breakers = CircuitBreakers(failure_threshold=3, reset_timeout=30.0, clock=clock)
    fail(breakers, "a.example", 2)
    assert breakers.state("a.example") is CircuitState.CLOSED
    breakers.before("a.example")  # still admitted
    breakers.record_failure("a.example")
    assert breakers.state("a.example") is CircuitState.OPEN
    assert gauge("a.example") == 2
    with pytest.raises(CircuitOpenError) as info:
        breakers.before("a.example")
    assert info.value.category is ErrorCategory.CIRCUIT_OPEN
    assert info.value.retry_after == pytest.approx(30.0)
    assert "a.example" in str(info.value)


def test_success_resets_the_consecutive_failure_count(clock):
    breakers = CircuitBreakers(failure_threshold=3, reset_timeout=30.0, clock=clock)
    fail(breakers, "b.example", 2)
    breakers.record_success("b.example")
    fail(breakers, "b.example", 2)
    assert breakers.state("b.example") is CircuitState.CLOSED


def test_hosts_are_independent_and_case_insensitive(clock):
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout=30.0, clock=clock)
    fail(breakers, "Down.Example", 1)
    with pytest.raises(CircuitOpenError):
        breakers.before("down.example")
    breakers.before("up.example")
    assert breakers.state("up.example") is CircuitState.CLOSED


def test_open_rejects_until_reset_timeout_then_half_open(clock):
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout=30.0, clock=clock)
    fail(breakers, "c.example", 1)
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError) as info:
        breakers.before("c.example")
    assert info.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    breakers.before("c.example")  # the probe
    assert breakers.state("c.example") is CircuitState.HALF_OPEN
    assert gauge("c.example") == 1
    with pytest.raises(CircuitOpenError):
        breakers.before("c.example")  # only one probe


def test_probe_success_closes(clock):
    breakers = CircuitBreakers(failure_threshold=2, reset_timeout=10.0, clock=clock)
    fail(breakers, "d.example", 2)
    clock.advance(10.0)
    breakers.before("d.example")
    breakers.record_success("d.example")
    assert breakers.state("d.example") is CircuitState.CLOSED
    assert gauge("d.example") == 0
    for _ in range(5):
        breakers.before("d.example")
    # Closed again with a fresh count: one failure is below the threshold.
    breakers.record_failure("d.example")
    assert breakers.state("d.example") is CircuitState.CLOSED


def test_probe_failure_reopens_for_a_full_timeout(clock):
    breakers = CircuitBreakers(failure_threshold=2, reset_timeout=10.0, clock=clock)
    fail(breakers, "e.example", 2)
    clock.advance(15.0)
    breakers.before("e.example")
    breakers.record_failure("e.example")
    assert breakers.state("e.example") is CircuitState.OPEN
    assert gauge("e.example") == 2
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breakers.before("e.example")
    clock.advance(0.1)
    breakers.before("e.example")
    assert breakers.state("e.example") is CircuitState.HALF_OPEN


def test_late_failure_while_open_does_not_extend_the_timeout(clock):
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout=10.0, clock=clock)
    fail(breakers, "f.example", 1)
    clock.advance(5.0)
    breakers.record_failure("f.example")  # a request admitted before the circuit opened
    clock.advance(5.0)
    breakers.before("f.example")
    assert breakers.state("f.example") is CircuitState.HALF_OPEN


def test_lost_probe_is_replaced_after_reset_timeout(clock):
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10.0, clock=clock)
    breaker.before()
    breaker.record_failure()
    clock.advance(10.0)
    breaker.before()  # probe whose outcome is never reported
    clock.advance(9.0)
    with pytest.raises(CircuitOpenError):
        breaker.before()
    clock.advance(1.0)
    breaker.before()
    assert breaker.state is CircuitState.HALF_OPEN


def test_half_open_admits_exactly_one_probe_among_16_threads(clock):
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout=5.0, clock=clock)
    fail(breakers, "g.example", 1)
    clock.advance(5.0)
    start = threading.Barrier(16)

    def attempt(_: int) -> bool:
        start.wait()
        try:
            breakers.before("g.example")
        except CircuitOpenError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        admitted = list(pool.map(attempt, range(16)))
    assert admitted.count(True) == 1
    assert breakers.state("g.example") is CircuitState.HALF_OPEN


def test_threshold_is_exact_under_concurrent_failures(clock):
    breakers = CircuitBreakers(failure_threshold=1000, reset_timeout=5.0, clock=clock)
    start = threading.Barrier(16)

    def hammer(_: int) -> None:
        start.wait()
        for _ in range(62):
            breakers.record_failure("h.example")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(hammer, range(16)))
    assert breakers.state("h.example") is CircuitState.CLOSED  # 992 failures
    fail(breakers, "h.example", 8)
    assert breakers.state("h.example") is CircuitState.OPEN


def test_idle_breakers_are_pruned_but_open_ones_kept(clock):
    breakers = CircuitBreakers(failure_threshold=1, reset_timeout=5.0, clock=clock, max_hosts=3)
    fail(breakers, "down.example", 1)
    for i in range(10):
        breakers.before(f"ok{i}.example")
    with pytest.raises(CircuitOpenError):
        breakers.before("down.example")
    assert len(breakers._breakers) <= 3


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        CircuitBreakers(failure_threshold=0, reset_timeout=1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, reset_timeout=0)


# ----------------------------------------------------------------------------------- backoff
def test_backoff_is_full_jitter_below_the_exponential_ceiling():
    assert backoff(0, base=1.0, cap=60.0, jitter=lambda: 0.5) == 0.5
    assert backoff(3, base=1.0, cap=60.0, jitter=lambda: 0.5) == 4.0
    assert backoff(3, base=1.0, cap=60.0, jitter=lambda: 0.0) == 0.0
    assert backoff(10, base=1.0, cap=60.0, jitter=lambda: 0.5) == 30.0
    assert backoff(10_000, base=1.0, cap=60.0, jitter=lambda: 0.999) == pytest.approx(59.94)


def test_backoff_with_the_default_jitter_stays_in_range():
    for attempt in range(20):
        assert 0.0 <= backoff(attempt, base=0.5, cap=10.0) < 10.0


def test_backoff_rejects_negative_attempts():
    with pytest.raises(ValueError):
        backoff(-1, base=1.0, cap=2.0)
