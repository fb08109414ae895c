"""How many jobs a worker claims next: a pure sizer and the rate window that feeds it.

Capacity is ``concurrency`` running jobs plus a prefetch buffer sized to what
the worker starts in about 50 ms at its measured completion rate (at most
three claim batches): fast jobs are claimed a batch at a time, slow jobs are
not hoarded. Jobs asked for by claims still in flight count as held. Small
top-ups are skipped while the runners are busy, so claims come in batches
rather than one job at a time. Finished jobs whose outcome is not written yet
do not count here: the acknowledger's back-pressure bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The prefetch buffer holds what the worker starts in this long (seconds).
PREFETCH_WINDOW_SECONDS = 0.05
#: ... and at most this many claim batches.
MAX_PREFETCH_BATCHES = 3
#: A ``refill_at`` level every count of jobs in flight is below: "wake me on any finish".
ALWAYS = 1 << 62


class RateWindow:
    """Completions per second: an EWMA of the rate over windows of at least 50 ms.

    Deterministic: the caller passes the time (monotonic seconds) and the running
    count of finished jobs.
    """

    def __init__(self) -> None:
        self.rate = 0.0
        self._mark_time = 0.0
        self._mark_count = 0

    def update(self, now: float, finished: int) -> float:
        """Fold in the completions since the last window (if 50 ms passed); return the rate."""
        elapsed = now - self._mark_time
        if elapsed >= PREFETCH_WINDOW_SECONDS:
            instant = (finished - self._mark_count) / elapsed if self._mark_time else 0.0
            self.rate = instant if self.rate == 0.0 else 0.5 * self.rate + 0.5 * instant
            self._mark_time, self._mark_count = now, finished
        return self.rate


@dataclass(frozen=True)
class ClaimSize:
    """``want``: jobs to claim now (0: wait). ``refill_at``: when ``want`` is 0, the
    number of jobs in flight at which a finishing job should wake the claim loop."""

    want: int
    refill_at: int


def size_claim(*, concurrency: int, batch_size: int, rate: float, in_flight: int, claiming: int) -> ClaimSize:
    """The size of the next claim.

    Args:
        concurrency: jobs the worker runs at once.
        batch_size: most jobs per claim.
        rate: completions per second (``RateWindow``).
        in_flight: claimed jobs not finished (buffered or running).
        claiming: jobs asked for by claims still in the database.
    """
    prefetch = min(MAX_PREFETCH_BATCHES * batch_size, int(rate * PREFETCH_WINDOW_SECONDS))
    held = in_flight + claiming
    free = concurrency + prefetch - held
    top_up = min(batch_size, max(1, prefetch // 2))
    if free <= 0 or (held >= concurrency and free < top_up):
        # Wait until enough jobs finished for a worthwhile claim.
        return ClaimSize(0, concurrency + prefetch - top_up - claiming)
    return ClaimSize(min(free, batch_size), ALWAYS)
