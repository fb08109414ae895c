"""The circuit breaker in front of Redis: after a failure, calls fail at once for a back-off.

A Redis failure opens the breaker for 1 s, doubling up to 5 s on further
failures; while it is open the client raises ``RedisUnavailable`` without
touching the network, so callers take the Postgres path at once. The first
success closes it and resets the back-off. The breaker only keeps time and
state (on an injected clock); logging and raising are the client's.
"""

from __future__ import annotations

import threading

from pgq.clock import Clock, SystemClock


class CircuitBreaker:
    """Open/closed state with a doubling back-off. Thread-safe.

    Args:
        clock: monotonic seconds (tests pass ``pgq.clock.ManualClock``).
        first_backoff: seconds the breaker stays open after the first failure.
        max_backoff: the longest back-off.
    """

    def __init__(self, clock: Clock | None = None, *, first_backoff: float = 1.0, max_backoff: float = 5.0) -> None:
        self.clock = clock or SystemClock()
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.failures = 0  # every failure recorded, for diagnostics
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._backoff = first_backoff
        self._down = False

    def allows(self) -> bool:
        """False while the breaker is open (a call now would fail at once)."""
        return self.clock.monotonic() >= self._open_until

    @property
    def down(self) -> bool:
        """True from a failure until the next success (open, or half-open after the back-off)."""
        return self._down

    def failed(self) -> bool:
        """Record a failure: open for the current back-off, double it. True when this
        failure starts an outage (the previous call succeeded)."""
        with self._lock:
            self.failures += 1
            self._open_until = self.clock.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)
            first = not self._down
            self._down = True
        return first

    def succeeded(self) -> bool:
        """Record a success: close and reset the back-off. True when this ends an outage."""
        if not self._down:
            return False
        with self._lock:
            if not self._down:
                return False
            self._down = False
            self._backoff = self.first_backoff
            return True
