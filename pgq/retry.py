"""Retry backoff: how long a failed job waits before its next attempt.

``Backoff`` is a pure value: the delay before attempt n+1 is
``min(base * factor**(n-1), max)`` seconds, with +/- ``jitter`` proportional
noise. The database applies the same formula (``pgq.retry_delay``) when it
records a failed attempt, from the job's ``retry_*`` columns, so rescue and
timeouts obey the policy too; tests check that both agree. No I/O here.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pgq.errors import MAX_DELAY_SECONDS, ValidationError


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap and proportional jitter. Units: seconds."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValidationError(f"Backoff.{name} must be a finite number, got {value!r}")
        if self.base <= 0:
            raise ValidationError(f"Backoff.base must be > 0 seconds, got {self.base}")
        if self.factor < 1:
            raise ValidationError(f"Backoff.factor must be >= 1, got {self.factor}")
        if self.max > MAX_DELAY_SECONDS:
            raise ValidationError(f"Backoff.max must be at most {MAX_DELAY_SECONDS:.0f} seconds (a year), got {self.max}")
        if self.max < self.base:
            raise ValidationError(f"Backoff.max ({self.max}) must be >= Backoff.base ({self.base})")
        if not 0 <= self.jitter < 1:
            raise ValidationError(f"Backoff.jitter must be in [0, 1), got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based), before jitter."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValidationError(f"attempt must be a whole number >= 1, got {attempt!r}")
        exponent = attempt - 1
        # Same log-space cap as pgq.retry_delay: no overflow for large attempts.
        if self.factor > 1 and exponent * math.log(self.factor) >= math.log(self.max / self.base):
            return float(self.max)
        return float(min(self.max, self.base * self.factor**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed attempt ``attempt``, with jitter drawn from ``rng``."""
        noise = (rng or random).uniform(-1.0, 1.0) * self.jitter
        return max(0.0, self.base_delay(attempt) * (1.0 + noise))


DEFAULT_BACKOFF = Backoff()
