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

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pgq.health import DEGRADED, FAILING

if TYPE_CHECKING:
    from pgq.queries import Queries
    from pgq.settings import Settings

log = logging.getLogger(__name__)

#: The exit code of a worker process that was evacuated: EX_TEMPFAIL (sysexits.h),
#: "try again later": a supervisor restarts it (click's usage error is 2, a failure 1).
EXIT_EVACUATED = 75
#: Samples the predictions fit (an hour at the default heartbeat interval of 30 s).
HISTORY = 120
#: When the other live workers of its queues have a median score below this (the middle
#: of the degraded band: most of them clearly unwell, not one noisy sample), a failing
#: worker's trouble is a shared cause and it does not evacuate.
SHARED_CAUSE_BELOW = (FAILING + DEGRADED) / 2
#: Outcomes the peers must have finished in the window before a worker is measured against them:
#: fewer say too little of how the jobs themselves fare.
MIN_PEER_OUTCOMES = 10
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
                finished: int | None = None, failed: int | None = None) -> str | None:
        """Fold in one sample (``now``: monotonic seconds); return why to evacuate, or None.

        ``finished``: the jobs whose outcome the sample counts, ``failed`` how many of them
        failed. A sample in which no job finished (jobs slower than the interval, or none
        to run) says nothing of errors or speed: its score neither counts nor breaks a
        failing streak, and the latest score stays the one before it (its RSS still
        counts). Nor does one in which every job that finished failed, but too few of
        them for the score's pseudo-counts to call it failing (3 of 3 failing scores 0.3):
        no evidence of health, only too little of failure.
        """
        self._times.append(now)
        self._rss.append(math.nan if rss_bytes is None else float(rss_bytes))
        few_and_all_failed = bool(finished) and failed == finished and score is not None and score >= FAILING
        if finished == 0 or few_and_all_failed:
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


@dataclass(frozen=True)
class PeerWindow:
    """A worker's latest samples against its peers' over the same span (``Queries.peer_window``).

    The worker's own are its last ``after_samples`` samples in which jobs finished (those
    its own rule counted, however long ago a slow or loaded worker sent them); its peers'
    are those of the other active workers sharing a queue with it over the span these
    cover, and at least over the last ``after_samples + 0.5`` intervals. Only samples in
    which jobs finished count. ``failed_jobs``: the jobs that failed on this worker in the
    window (the latest ones it remembers); ``failed_elsewhere``: how many of them
    failed on another worker too.
    """

    completed: int
    failed: int
    p50_ms: float | None
    peers: int
    peers_completed: int
    peers_failed: int
    peers_p50_ms: float | None
    peers_score: float | None
    failed_jobs: int = 0
    failed_elsewhere: int = 0

    def relative_score(self, latest: Mapping[str, Any], rss_limit_bytes: float | None,
                       process: float | None = None) -> float:
        """The worker's score measured against its peers rather than against itself.

        The errors component counts only the error rate above the peers', as a share of
        the attempts that succeed on them (failures the jobs cause everywhere are not
        this worker's; failing half of what the peers complete is critical, as failing
        half its attempts is on its own), the speed component compares its
        median run time with the peers' median instead of its own history; the other
        components (stuck handlers, outcome flow, event loop, memory) are the latest
        sample's, which belong to the process alone. The error rates are the window's,
        the run time the latest sample's median (the window's when it has none).
        """
        from pgq.health import score as s  # numpy: only when an evacuation is weighed

        own_rate = self.failed / (self.completed + self.failed + s.ERROR_PRIOR)
        peers_rate = self.peers_failed / max(1, self.peers_completed + self.peers_failed)
        # The share of the attempts that succeed on the peers which fail here: the absolute
        # rate when the peers never fail, and 1 when nothing succeeds here.
        excess = max(0.0, own_rate - peers_rate) / (1 - peers_rate) if peers_rate < 1 else 0.0
        errors = min(1.0, max(0.0, 1 - s.ERROR_SLOPE * excess))
        speed, p50 = 1.0, latest.get("latency_p50_ms") or self.p50_ms
        if p50 and self.peers_p50_ms and p50 > 0 and self.peers_p50_ms > 0:
            speed = min(1.0, s.SLOWDOWN_TOLERANCE * self.peers_p50_ms / p50)
        if process is None:
            process = process_score(latest, rss_limit_bytes)
        return errors * speed * process

    def why_stay(self, latest: Mapping[str, Any], rss_limit_bytes: float | None) -> str | None:
        """Why a worker its own samples would evacuate stays (None: it is the odd one out, it goes).

        Evacuation is for the odd one out: a restart helps a worker whose process is
        unwell, not one whose jobs are. With peers that finished at least
        ``MIN_PEER_OUTCOMES`` jobs in the window, it stays when they are failing too
        (median score below ``SHARED_CAUSE_BELOW``) or when, measured against them
        (``relative_score``), it is not failing. Without such peers, it stays when at
        least half of the jobs that failed on it failed on another worker too (poison
        jobs follow the job, not the worker); otherwise its own evidence decides.
        """
        process = process_score(latest, rss_limit_bytes)
        if process < FAILING:
            return None  # stuck handlers, outcome flow, event loop or memory: the process's own
        if self.peers_completed + self.peers_failed >= MIN_PEER_OUTCOMES:
            if self.peers_score is not None and self.peers_score < SHARED_CAUSE_BELOW:
                return f"its peers are not healthy either (median score {self.peers_score:.2f}): a shared cause"
            relative = self.relative_score(latest, rss_limit_bytes, process)
            if relative >= FAILING:
                return (f"measured against its peers it is not failing (score {relative:.2f}): "
                        f"its jobs fail or run slowly on the other workers too")
            return None
        from pgq.health.score import ERROR_PRIOR, ERROR_SLOPE

        errors = 1 - ERROR_SLOPE * self.failed / (self.completed + self.failed + ERROR_PRIOR)
        if errors < FAILING and self.failed_jobs and 2 * self.failed_elsewhere >= self.failed_jobs:
            return (f"{self.failed_elsewhere} of the {self.failed_jobs} jobs that failed on it failed on another "
                    f"worker too: poison jobs, not a failing worker")
        return None


def process_score(latest: Mapping[str, Any], rss_limit_bytes: float | None) -> float:
    """The latest sample's score without its jobs' outcomes and run times: what the process alone
    accounts for (stuck handlers, outcome flow, event loop lag, memory)."""
    from pgq.health.score import score_sample

    own = {k: v for k, v in latest.items() if k not in ("jobs_completed", "jobs_failed", "latency_p50_ms")}
    return score_sample(own, None, rss_limit_bytes)


def weigh_against_peers(conn: Any, queries: Queries, settings: Settings, worker_id: UUID, queues: Sequence[str],
                        failed_job_ids: Sequence[int], reason: str, sample: Mapping[str, Any]) -> str | None:
    """Why worker ``worker_id`` (on ``queues``, whose policy would evacuate it for ``reason``)
    stays, or None: it goes. ``failed_job_ids``: its latest failed jobs.

    Reads its ``PeerWindow`` on ``conn`` and asks ``PeerWindow.why_stay``; a memory
    prediction concerns the process alone and is not weighed. The figures are logged
    either way, so that an operator can see what the decision rested on.
    """
    if reason.startswith("memory"):
        return None
    samples = settings.evacuation_after_samples
    peers = PeerWindow(*queries.peer_window(conn, worker_id, queues, samples,
                                            (samples + 0.5) * settings.heartbeat_interval_seconds, failed_job_ids))
    why = peers.why_stay(sample, settings.health_rss_limit_bytes)
    log.info("worker %s weighed against its peers (%s): %s -> %s", worker_id, reason, peers,
             "stays" if why else "evacuates")
    return why
