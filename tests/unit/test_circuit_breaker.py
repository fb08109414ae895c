"""The circuit breaker in front of Redis (``pgq.redis.breaker``), on a manual clock."""

from __future__ import annotations

from pgq.clock import ManualClock
from pgq.redis.breaker import CircuitBreaker


def test_a_failure_opens_the_breaker_for_one_second() -> None:
    clock = ManualClock(100.0)
    breaker = CircuitBreaker(clock)
    assert breaker.allows() and not breaker.down
    assert breaker.failed() is True  # the outage starts
    assert not breaker.allows()
    clock.advance(0.999)
    assert not breaker.allows()
    clock.advance(0.001)
    assert breaker.allows()  # half-open: one call may try
    assert breaker.down


def test_repeated_failures_double_the_back_off_up_to_five_seconds() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(clock)
    waits = []
    for _ in range(6):
        first = breaker.failed()
        opened = clock.monotonic()
        while not breaker.allows():
            clock.advance(0.5)
        waits.append(clock.monotonic() - opened)
        assert first is (len(waits) == 1)  # only the first failure starts the outage
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert breaker.failures == 6


def test_a_success_closes_the_breaker_and_resets_the_back_off() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(clock)
    breaker.failed()
    breaker.failed()  # back-off now 4 s
    clock.advance(2.0)
    assert breaker.succeeded() is True  # the outage ends
    assert breaker.succeeded() is False  # nothing to end
    assert not breaker.down and breaker.allows()
    breaker.failed()
    assert not breaker.allows()
    clock.advance(1.0)
    assert breaker.allows()  # back to one second
