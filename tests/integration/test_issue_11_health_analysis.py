"""Issue 11, parts 3 and 4: the analysis read from samples built in Postgres.

Four workers serve one queue; their samples of the last 20 minutes are
inserted with known values: one has always been five times slower than the
others, one's score falls steadily towards 0.3, two are healthy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from factories import insert_worker
from pgq.health import analysis
from pgq.health.queries import HealthQueries

pytestmark = pytest.mark.integration

N = 40  # every 30 s over 20 minutes


def add_samples(conn: psycopg.Connection[Any], worker: uuid.UUID, now: dt.datetime, *, p50: float,
                scores: list[float]) -> None:
    for i, score in enumerate(scores):
        conn.execute(
            "INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at,"
            " jobs_completed, jobs_failed, latency_p50_ms, health_score)"
            " VALUES (%s, 'heartbeat', %s, %s, 100, 0, %s, %s)",
            (worker, score, now - dt.timedelta(seconds=30 * (N - 1 - i)), p50 + (i % 3) * 0.5, score))


def test_the_slow_worker_and_the_declining_one_are_found(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    healthy = [insert_worker(conn, queues=["emails"]) for _ in range(2)]
    slow = insert_worker(conn, queues=["emails"])
    declining = insert_worker(conn, queues=["emails"])
    gone = insert_worker(conn, queues=["emails"], status="stopped")
    for w in healthy:
        add_samples(conn, w, now, p50=10, scores=[1.0] * N)
    add_samples(conn, slow, now, p50=50, scores=[1.0] * N)
    # From 0.9 down 0.3 over 39 intervals of 30 s (1,170 s): at 0.6 now, down 0.3 more in 1,170 s.
    falling = [0.9 - 0.3 * i / (N - 1) for i in range(N)]
    add_samples(conn, declining, now, p50=10, scores=falling)
    add_samples(conn, gone, now, p50=500, scores=[0.1] * N)

    report = {h.worker_id: h for h in analysis.read(conn, HealthQueries("pgq"))}

    assert set(report) == {*healthy, slow, declining}  # the stopped worker is not analysed
    for w in healthy:
        assert (report[w].score, report[w].anomalies, report[w].failure) == (1.0, [], None)
        assert report[w].trend_per_hour == 0.0 and report[w].state == "healthy"
    [anomaly] = report[slow].anomalies
    assert (anomaly.metric, anomaly.against, anomaly.queue) == ("latency_p50_ms", "peers", "emails")
    assert report[slow].failure is None
    d = report[declining]
    assert d.score == pytest.approx(0.6) and d.state == "degraded"
    assert d.trend_per_hour == pytest.approx(-0.3 / 1170 * 3600, rel=1e-3)
    assert d.failure is not None and d.failure.seconds == pytest.approx(1170, rel=0.01)
    assert d.failure.probability > 0.99 and d.samples == N
    assert d.as_dict()["failure"]["seconds"] == pytest.approx(1170, rel=0.01)


def test_no_samples_no_workers(conn: psycopg.Connection[Any]) -> None:
    insert_worker(conn)
    assert analysis.read(conn, HealthQueries("pgq")) == []
