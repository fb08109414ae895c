"""What a worker measures for its health samples, cheaply, and the sample it sends.

The job path records into plain fields with no lock (``job_finished``,
``claim_round_trip``, ``ack_round_trip``, ``outcome_waited``): an append or an
addition under the GIL, so a measurement that races the heartbeat may land in
the next sample (or, rarely, be lost): samples are statistics, not accounts.
Handler run times are kept in a reservoir of ``RESERVOIR`` values per sample
interval (uniform over the interval's jobs, a fixed memory cost whatever the
rate). ``sample()`` turns what was recorded since the last committed sample
into the values of one ``worker_health_logs`` row; the heartbeat sends it in
its own statement (``heartbeat_worker_v3``). Scoring the sample is
``pgq.health.score``'s business.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import random
import resource
from dataclasses import dataclass
from typing import Any

#: Handler run times kept per sample interval (a uniform reservoir beyond that).
RESERVOIR = 2048
#: How often the event-loop probe runs (seconds): its lateness is the loop's lag.
LOOP_PROBE_SECONDS = 0.25
#: Samples whose median run time make the worker's latency baseline (an hour at 30 s).
BASELINE_SAMPLES = 120


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of a non-empty list, linear between ranks (numpy's default)."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _uniform() -> float:
    """A uniform draw in (0, 1) (a logarithm is taken of it, and of 1 minus a power of it)."""
    return random.random() or 0.5


def rss_bytes() -> int:
    """Resident memory of this process now (``/proc/self/statm``), else its peak (``getrusage``)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if os.uname().sysname == "Darwin" else peak * 1024)


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far (seconds)."""
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class Mark:
    """Where a sample ended: made the start of the next one once the sample is committed."""

    at: float
    cpu: float
    completed: int
    failed: int


class WorkerMetrics:
    """One worker's health measurements (see the module docstring).

    Args:
        enabled: False when ``PGQ_HEALTH_SAMPLING=false``: the worker's parts then
            record nothing and the heartbeat sends no sample.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._durations: list[float] = []
        self._seen = 0  # jobs offered to the reservoir this interval
        self._weight = 0.0  # algorithm L's W, and the number of the next value kept
        self._next = 0
        self._claim_seconds = 0.0
        self._claims = 0
        self._ack_seconds = 0.0
        self._acks = 0
        self._ack_lag = 0.0
        self._loop_lag: float | None = None
        self._mark: Mark | None = None
        #: The health score of the latest sample (None: none taken yet); the Prometheus exporter reads it.
        self.score: float | None = None
        #: The median run times of the last ``BASELINE_SAMPLES`` samples (NaN: none ran).
        self.p50_history: collections.deque[float] = collections.deque(maxlen=BASELINE_SAMPLES)

    # ------------------------------------------------------------ the job path
    def job_finished(self, seconds: float) -> None:
        """A handler returned after ``seconds``.

        Past ``RESERVOIR`` values, a uniform reservoir with skips (Li's algorithm
        L): the index of the next value kept is drawn once, so the jobs in between
        pay one comparison, not a random draw each.
        """
        seen = self._seen = self._seen + 1
        if seen <= RESERVOIR:
            self._durations.append(seconds)
            if seen == RESERVOIR:
                self._weight = math.exp(math.log(_uniform()) / RESERVOIR)
                self._next = seen + self._skip()
        elif seen >= self._next:
            self._durations[random.randrange(RESERVOIR)] = seconds
            self._weight *= math.exp(math.log(_uniform()) / RESERVOIR)
            self._next = seen + self._skip()

    def _skip(self) -> int:
        """How many values algorithm L passes over before keeping the next one."""
        return int(math.log(_uniform()) / math.log(1 - min(self._weight, 1 - 1e-12))) + 1

    def claim_round_trip(self, seconds: float) -> None:
        self._claim_seconds += seconds
        self._claims += 1

    def ack_round_trip(self, seconds: float) -> None:
        self._ack_seconds += seconds
        self._acks += 1

    def outcome_waited(self, seconds: float) -> None:
        """An outcome was committed ``seconds`` after its handler returned (the longest counts)."""
        if seconds > self._ack_lag:
            self._ack_lag = seconds

    def loop_lagged(self, seconds: float) -> None:
        """The event loop ran a probe ``seconds`` late (the longest counts)."""
        if self._loop_lag is None or seconds > self._loop_lag:
            self._loop_lag = seconds

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Probe ``loop`` every ``LOOP_PROBE_SECONDS`` from inside it; the probe's lateness
        is the loop's lag (a handler that blocks the loop delays it). Thread-safe."""
        if not self.enabled:
            return

        def probe(expected: float) -> None:
            now = loop.time()
            self.loop_lagged(max(0.0, now - expected))
            loop.call_at(now + LOOP_PROBE_SECONDS, probe, now + LOOP_PROBE_SECONDS)

        def start() -> None:
            due = loop.time() + LOOP_PROBE_SECONDS
            loop.call_at(due, probe, due)

        loop.call_soon_threadsafe(start)

    # ------------------------------------------------------------ the heartbeat
    def sample(self, *, now: float, completed: int, failed: int, in_flight: int, capacity: int,
               stuck: int) -> tuple[dict[str, Any], Mark]:
        """The values of one sample, covering what was recorded since the last committed one.

        Args:
            now: the worker's monotonic clock (seconds).
            completed, failed: the worker's counts so far (``WorkerCounters``): the
                sample holds what was added since the last committed sample.
            in_flight, capacity, stuck: the worker's state now.

        Returns:
            The sample (``heartbeat_worker_v3``'s keys; a metric with nothing to say
            is left out) and the ``Mark`` to pass to ``committed`` once it is written.
        """
        cpu = cpu_seconds()
        mark = Mark(now, cpu, completed, failed)
        durations, self._durations, self._seen = self._durations, [], 0
        claims, claim_seconds, self._claims, self._claim_seconds = self._claims, self._claim_seconds, 0, 0.0
        acks, ack_seconds, self._acks, self._ack_seconds = self._acks, self._ack_seconds, 0, 0.0
        ack_lag, self._ack_lag = self._ack_lag, 0.0
        loop_lag, self._loop_lag = self._loop_lag, None
        values: dict[str, Any] = {"in_flight": in_flight, "capacity": capacity, "stuck_handlers": stuck,
                                  "rss_bytes": rss_bytes(), "ack_lag_ms": round(ack_lag * 1000, 3)}
        previous = self._mark
        # The first sample counts from the worker's start (its interval is unknown).
        done = max(0, completed - (previous.completed if previous else 0))
        bad = max(0, failed - (previous.failed if previous else 0))
        values.update(jobs_completed=done, jobs_failed=bad)
        if done + bad:
            values["error_rate"] = round(bad / (done + bad), 6)
        if previous is not None:
            elapsed = max(0.0, now - previous.at)
            values["interval_seconds"] = round(elapsed, 3)
            if elapsed > 0:
                values["cpu_percent"] = round(max(0.0, cpu - previous.cpu) / elapsed * 100, 3)
        if durations:
            values["latency_p50_ms"] = round(_quantile(durations, 0.5) * 1000, 3)
            values["latency_p95_ms"] = round(_quantile(durations, 0.95) * 1000, 3)
        if claims:
            values["claim_rtt_ms"] = round(claim_seconds / claims * 1000, 3)
        if acks:
            values["ack_rtt_ms"] = round(ack_seconds / acks * 1000, 3)
        if loop_lag is not None:
            values["loop_lag_ms"] = round(loop_lag * 1000, 3)
        return values, mark

    def committed(self, mark: Mark) -> None:
        """The sample that ended at ``mark`` is written: the next one starts there. (A
        sample that failed to be written leaves its counts to the next one.)"""
        self._mark = mark
