"""Health-aware claiming and evacuation: the rules, as pure functions of a worker's own samples.

``claim_batch`` shrinks a worker's claim batch with its latest health score
(degraded: half, failing: one job). ``EvacuationPolicy`` watches the scores
(and RSS) a worker sends with its heartbeats and says when the worker should
evacuate itself: failing in ``after_samples`` consecutive samples, or
predicted (``pgq.health.prediction``) to fail within the horizon. Carrying
the evacuation out (``evacuate_worker``, the drain, the exit code) is
``pgq.worker``'s; docs/health.md explains the rules.
"""

from __future__ import annotations

import math
from collections import deque

from pgq.health import DEGRADED, FAILING

#: The exit code of a worker process that was evacuated: EX_TEMPFAIL (sysexits.h),
#: "try again later": a supervisor restarts it (click's usage error is 2, a failure 1).
EXIT_EVACUATED = 75
#: Samples the predictions fit (an hour at the default heartbeat interval of 30 s).
HISTORY = 120
#: When the other live workers of its queues have a median score below this (the middle
#: of the degraded band: most of them clearly unwell, not one noisy sample), a failing
#: worker's trouble is a shared cause and it does not evacuate.
SHARED_CAUSE_BELOW = (FAILING + DEGRADED) / 2
#: A prediction evacuates when the fitted line is this likely past the threshold at the horizon.
CONFIDENCE = 0.95


def claim_batch(batch_size: int, score: float | None) -> int:
    """The claim batch of a worker whose latest health score is ``score`` (None: not measured).

    Healthy (>= 0.7) or unmeasured: ``batch_size``. Degraded (0.3 to 0.7): half of it
    (at least 1). Failing (< 0.3): 1 job per claim, until the evacuation (if on)
    stops claiming altogether: one bad interval may be noise, and a worker that may
    not evacuate must still make progress.
    """
    if score is None or not math.isfinite(score) or score >= DEGRADED:
        return batch_size
    if score >= FAILING:
        return max(1, batch_size // 2)
    return 1


class EvacuationPolicy:
    """Decides, sample by sample, whether a worker must evacuate itself.

    Args:
        after_samples: consecutive failing samples (score < 0.3) that evacuate.
        horizon_seconds: a failure predicted within this many seconds evacuates (0: never).
        rss_limit_bytes: the memory limit the RSS is predicted against (0: none).
        score_trend: predict the score too, not only the memory.

    A prediction needs the fit's own conditions (``pgq.health.prediction``: at
    least 6 samples, a significant trend) and more: a probability of at least
    ``CONFIDENCE`` of being past the threshold at the horizon, a horizon no
    longer than the span of the samples fitted (never extrapolate further
    ahead than the history looks back), and, for the score, the latest
    ``after_samples`` scores all below 0.7 (degraded). A line already past the threshold ("in 0 s")
    does not evacuate: that is the consecutive-samples rule's call.
    """

    def __init__(self, *, after_samples: int, horizon_seconds: float, rss_limit_bytes: int = 0,
                 score_trend: bool = False) -> None:
        self.after_samples = after_samples
        self.score_trend = score_trend
        self.horizon_seconds = horizon_seconds
        self.rss_limit_bytes = rss_limit_bytes
        self.failing_in_a_row = 0
        self.latest: float | None = None
        self._times: deque[float] = deque(maxlen=HISTORY)
        self._scores: deque[float] = deque(maxlen=HISTORY)
        self._rss: deque[float] = deque(maxlen=HISTORY)

    def observe(self, now: float, score: float | None, rss_bytes: float | None = None,
                finished: int | None = None) -> str | None:
        """Fold in one sample (``now``: monotonic seconds); return why to evacuate, or None.

        ``finished``: the jobs whose outcome the sample counts. A sample in which no job
        finished (jobs slower than the interval, or none to run) says nothing of errors
        or speed: its score neither counts nor breaks a failing streak, and the latest
        score stays the one before it (its RSS still counts).
        """
        self._times.append(now)
        self._rss.append(math.nan if rss_bytes is None else float(rss_bytes))
        if finished == 0:
            self._scores.append(math.nan)
            return self._predicted(now) if self.horizon_seconds > 0 else None
        self.latest = score if score is not None and math.isfinite(score) else None
        self._scores.append(math.nan if self.latest is None else self.latest)
        if self.latest is not None and self.latest < FAILING:
            self.failing_in_a_row += 1
        else:
            self.failing_in_a_row = 0
        if self.failing_in_a_row >= self.after_samples:
            return (f"health score {self.latest:.2f} below {FAILING} in {self.failing_in_a_row} "
                    f"consecutive samples")
        if self.horizon_seconds > 0:
            return self._predicted(now)
        return None

    def _predicted(self, now: float) -> str | None:
        """Why a prediction evacuates the worker, or None."""
        span = now - self._times[0]
        horizon = min(self.horizon_seconds, span)
        # A trend in the score counts once the worker is degraded for as long as the
        # consecutive rule asks failing for: one dip of a noisy score predicts nothing.
        recent = [x for x in self._scores if not math.isnan(x)][-self.after_samples:]
        watch_score = self.score_trend and len(recent) == self.after_samples and all(x < DEGRADED for x in recent)
        if horizon <= 0 or len(self._times) < 6 or not (watch_score or self.rss_limit_bytes > 0):
            return None
        import numpy as np  # only once a trend is worth fitting

        from pgq.health.prediction import predict_failures, predict_memory
        from pgq.health.samples import SampleSet

        t = np.array([[x - now for x in self._times]])
        samples = SampleSet.from_arrays(t, {"health_score": np.array([self._scores]),
                                            "rss_bytes": np.array([self._rss])})
        found = predict_failures(samples, horizon) if watch_score else []
        found += predict_memory(samples, self.rss_limit_bytes, horizon)
        for p in found:
            # A line already past the threshold adds nothing to the consecutive-samples
            # rule, which is the one that guards against a few noisy samples.
            if p.probability >= CONFIDENCE and p.seconds > 0:
                what = "health score predicted to fall below 0.3" if p.what == "health_score" \
                    else "memory predicted to reach PGQ_HEALTH_RSS_LIMIT_BYTES"
                return f"{what} in {p.seconds:.0f} s (probability {p.probability:.2f} within {horizon:.0f} s)"
        return None
