"""The health of every live worker at once: score, trend, anomalies, predictions.

``analyse`` is pure (a ``SampleSet`` in, one ``WorkerHealth`` per worker out),
vectorised over all workers; ``read`` loads the last window of samples from
Postgres and analyses them. The CLI (``pgq workers``, ``pgq health``) prints
what these return.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pgq.health import anomalies, prediction
from pgq.health.queries import HealthQueries
from pgq.health.samples import SampleSet, latest
from pgq.health.score import DEGRADED, FAILING

#: Samples read for the analysis: the last hour.
WINDOW_SECONDS = 3600.0


@dataclass(frozen=True)
class WorkerHealth:
    """One worker's health: its latest ``score`` (None before its first scored sample), the score's
    ``trend_per_hour`` (None with too few samples), its anomalies and its predictions."""

    worker_id: uuid.UUID
    queues: tuple[str, ...]
    samples: int
    score: float | None
    trend_per_hour: float | None
    anomalies: list[anomalies.Anomaly] = field(default_factory=list)
    failure: prediction.Prediction | None = None
    memory: prediction.Prediction | None = None

    @property
    def state(self) -> str:
        """'failing' (score < 0.3), 'degraded' (< 0.7), 'healthy', or 'unknown' (no score yet)."""
        if self.score is None:
            return "unknown"
        return "failing" if self.score < FAILING else "degraded" if self.score < DEGRADED else "healthy"

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker_id": str(self.worker_id), "queues": list(self.queues), "samples": self.samples,
            "score": self.score, "state": self.state, "trend_per_hour": self.trend_per_hour,
            "anomalies": [{"metric": a.metric, "against": a.against, "queue": a.queue, "value": a.value,
                           "reference": a.reference, "z": round(a.z, 2)} for a in self.anomalies],
            "failure": _prediction_dict(self.failure), "memory": _prediction_dict(self.memory),
        }


def _prediction_dict(p: prediction.Prediction | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"seconds": round(p.seconds, 1), "earliest": round(p.earliest, 1),
            "latest": None if math.isinf(p.latest) else round(p.latest, 1),
            "probability": round(p.probability, 4), "slope_per_hour": p.slope_per_hour,
            "r_squared": round(p.r_squared, 4), "p_value": p.p_value, "samples": p.samples}


def analyse(samples: SampleSet, *, rss_limit_bytes: int = 0,
            horizon: float = prediction.HORIZON_SECONDS) -> list[WorkerHealth]:
    """Score, trend, anomalies and predictions of every worker in ``samples``."""
    scores = samples.metrics["health_score"]
    current = latest(scores) if scores.size else np.full(samples.size, np.nan)
    lines = prediction.fit_lines(samples.t, scores)
    by_worker: dict[uuid.UUID, list[anomalies.Anomaly]] = {}
    for a in anomalies.detect(samples):
        by_worker.setdefault(a.worker_id, []).append(a)
    failures = {p.worker_id: p for p in prediction.predict_failures(samples, horizon)}
    memory = {p.worker_id: p for p in prediction.predict_memory(samples, rss_limit_bytes, horizon)}
    trends = np.where(lines.n >= prediction.MIN_POINTS, np.round(lines.slope * 3600, 4), np.nan).tolist()
    out = []
    # Plain Python values from here: per-element numpy scalars cost more than the analysis.
    for worker_id, queues, count, score, trend in zip(samples.worker_ids, samples.queues, samples.counts.tolist(),
                                                      current.tolist(), trends, strict=True):
        out.append(WorkerHealth(worker_id, queues, count, None if math.isnan(score) else score,
                                None if math.isnan(trend) else trend,
                                by_worker.get(worker_id, []), failures.get(worker_id), memory.get(worker_id)))
    return out


def read(conn: Any, queries: HealthQueries, *, window_seconds: float = WINDOW_SECONDS, rss_limit_bytes: int = 0,
         horizon: float = prediction.HORIZON_SECONDS) -> list[WorkerHealth]:
    """Load the live workers' samples of the last ``window_seconds`` and analyse them."""
    return analyse(SampleSet.from_rows(queries.recent_samples(conn, window_seconds)),
                   rss_limit_bytes=rss_limit_bytes, horizon=horizon)
