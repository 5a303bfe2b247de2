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
    CircuitSettings,
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


def settings(rate: float = 0.5, minimum: int = 1, window: int = 10, reset: float = 30.0) -> CircuitSettings:
    return CircuitSettings(failure_rate=rate, minimum_calls=minimum, window_size=window, reset_timeout=reset)


def fail(breakers: CircuitBreakers, host: str, times: int, prefix: str = "/f") -> None:
    for i in range(times):
        breakers.before(host)
        breakers.record_failure(host, f"{prefix}{i}")


def succeed(breakers: CircuitBreakers, host: str, times: int, prefix: str = "/s") -> None:
    for i in range(times):
        breakers.before(host)
        breakers.record_success(host, f"{prefix}{i}")


def test_opens_on_the_failure_rate_once_the_minimum_calls_are_in(clock):
    breakers = CircuitBreakers(settings(rate=0.5, minimum=4, window=10), clock=clock)
    fail(breakers, "a.example", 3)
    assert breakers.state("a.example") is CircuitState.CLOSED, "3 calls: below the minimum"
    assert gauge("a.example") is None, "no series for a closed circuit"
    fail(breakers, "a.example", 1, prefix="/g")
    assert breakers.state("a.example") is CircuitState.OPEN
    assert gauge("a.example") == 2
    with pytest.raises(CircuitOpenError) as info:
        breakers.before("a.example")
    assert info.value.category is ErrorCategory.CIRCUIT_OPEN
    assert info.value.retry_after == pytest.approx(30.0)
    assert "a.example" in str(info.value)


def test_a_third_of_urls_failing_keeps_the_circuit_closed(clock):
    breakers = CircuitBreakers(settings(rate=0.5, minimum=10, window=50), clock=clock)
    for i in range(300):
        breakers.before("part.example")
        if i % 3 == 0:
            breakers.record_failure("part.example", f"/doc-{i}")
        else:
            breakers.record_success("part.example", f"/doc-{i}")
    assert breakers.state("part.example") is CircuitState.CLOSED


def test_one_url_failing_again_and_again_counts_once(clock):
    breakers = CircuitBreakers(settings(rate=0.5, minimum=4, window=10), clock=clock)
    succeed(breakers, "b.example", 3)
    for _ in range(50):
        breakers.before("b.example")
        breakers.record_failure("b.example", "/always-503")
    assert breakers.state("b.example") is CircuitState.CLOSED, "1 failing URL of 4: a quarter, not the host"


def test_the_window_keeps_only_the_latest_calls(clock):
    breakers = CircuitBreakers(settings(rate=0.5, minimum=4, window=4), clock=clock)
    fail(breakers, "w.example", 1)
    succeed(breakers, "w.example", 2)
    succeed(breakers, "w.example", 2, prefix="/t")  # pushes the failure out of the window
    fail(breakers, "w.example", 1, prefix="/g")
    assert breakers.state("w.example") is CircuitState.CLOSED  # 1 of 4


def test_hosts_are_independent_and_case_insensitive(clock):
    breakers = CircuitBreakers(settings(minimum=1), clock=clock)
    fail(breakers, "Files.Example", 1)
    assert breakers.state("files.example") is CircuitState.OPEN
    assert breakers.state("other.example") is CircuitState.CLOSED
    breakers.before("other.example")


def test_open_rejects_until_reset_timeout_then_half_open(clock):
    breakers = CircuitBreakers(settings(minimum=1, reset=30.0), clock=clock)
    fail(breakers, "d.example", 1)
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError) as info:
        breakers.before("d.example")
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    breakers.before("d.example")
    assert breakers.state("d.example") is CircuitState.HALF_OPEN
    assert gauge("d.example") == 1


def test_probe_success_closes_and_removes_the_series(clock):
    breakers = CircuitBreakers(settings(minimum=2, reset=10.0), clock=clock)
    fail(breakers, "c.example", 2)
    clock.advance(10.0)
    breakers.before("c.example")
    breakers.record_success("c.example", "/probe")
    assert breakers.state("c.example") is CircuitState.CLOSED
    assert gauge("c.example") is None
    fail(breakers, "c.example", 1)
    assert breakers.state("c.example") is CircuitState.CLOSED, "the window started afresh"


def test_probe_failure_reopens_for_a_full_timeout(clock):
    breakers = CircuitBreakers(settings(minimum=2, reset=10.0), clock=clock)
    fail(breakers, "e.example", 2)
    clock.advance(10.0)
    breakers.before("e.example")
    breakers.record_failure("e.example", "/probe")
    assert breakers.state("e.example") is CircuitState.OPEN
    clock.advance(9.0)
    with pytest.raises(CircuitOpenError):
        breakers.before("e.example")
    clock.advance(1.0)
    breakers.before("e.example")
    assert breakers.state("e.example") is CircuitState.HALF_OPEN


def test_late_reports_while_open_neither_extend_nor_close_it(clock):
    breakers = CircuitBreakers(settings(minimum=1, reset=10.0), clock=clock)
    fail(breakers, "f.example", 1)
    clock.advance(5.0)
    breakers.record_failure("f.example", "/late")  # requests admitted before the circuit opened
    breakers.record_success("f.example", "/late-ok")
    assert breakers.state("f.example") is CircuitState.OPEN
    clock.advance(5.0)
    breakers.before("f.example")
    assert breakers.state("f.example") is CircuitState.HALF_OPEN


def test_lost_probe_is_replaced_after_reset_timeout(clock):
    breaker = CircuitBreaker(settings(minimum=1, reset=10.0), clock=clock)
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
    breakers = CircuitBreakers(settings(minimum=1, reset=5.0), clock=clock)
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


def test_rate_is_exact_under_concurrent_reports(clock):
    breakers = CircuitBreakers(settings(rate=0.5, minimum=1000, window=1000), clock=clock)
    start = threading.Barrier(16)

    def hammer(worker: int) -> None:
        start.wait()
        for i in range(31):
            breakers.record_failure("h.example", f"/f-{worker}-{i}")
            breakers.record_success("h.example", f"/s-{worker}-{i}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(hammer, range(16)))
    assert breakers.state("h.example") is CircuitState.CLOSED  # 992 calls: below the minimum
    fail(breakers, "h.example", 8, prefix="/last")
    assert breakers.state("h.example") is CircuitState.OPEN  # 1000 calls, 504 failed


def test_idle_breakers_are_pruned_but_open_ones_kept(clock):
    breakers = CircuitBreakers(settings(minimum=1, reset=5.0), clock=clock, max_hosts=3)
    fail(breakers, "down.example", 1)
    for i in range(10):
        breakers.before(f"ok{i}.example")
    with pytest.raises(CircuitOpenError):
        breakers.before("down.example")
    assert len(breakers._breakers) <= 3


def test_gauge_series_stay_bounded_by_hosts_not_closed(clock):
    breakers = CircuitBreakers(settings(minimum=1, reset=1.0), clock=clock)
    for i in range(200):
        host = f"flap{i}.example"
        fail(breakers, host, 1)
        clock.advance(1.0)
        breakers.before(host)
        breakers.record_success(host, "/probe")
    fail(breakers, "still-down.example", 1)
    hosts = {s.labels["host"] for m in REGISTRY.collect() if m.name == "kafkapipe_circuit_state"
             for s in m.samples}
    assert not any(h.startswith("flap") for h in hosts), "closed circuits keep no series"
    assert "still-down.example" in hosts


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        CircuitSettings(failure_rate=0.0)
    with pytest.raises(ValueError):
        CircuitSettings(failure_rate=1.5)
    with pytest.raises(ValueError):
        CircuitSettings(minimum_calls=0)
    with pytest.raises(ValueError):
        CircuitSettings(reset_timeout=0)
    with pytest.raises(ValueError):
        CircuitSettings(minimum_calls=20, window_size=10)


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
