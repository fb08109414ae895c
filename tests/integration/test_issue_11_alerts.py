"""Issue 11, part 5: each alert rule of pgq.health_alerts against states built in the database.

Thresholds are the design documents' (DLQ > 100, failing workers > 10 %,
saturation > 90 %, pool > 80 %, retries > 5 %, duration > 2x baseline, > 3
heartbeat timeouts per hour); each rule is checked just below and just above
its threshold. The view compares with ``>``, so the threshold itself does not fire.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from factories import insert_dead_letter, insert_job, insert_worker
from pgq.health import alerts
from pgq.health.queries import HealthQueries

pytestmark = pytest.mark.integration


def evaluated(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[float, bool]]:
    return {(a.rule, a.subject): (a.value, a.firing) for a in alerts.evaluate(conn, HealthQueries("pgq"))}


def rule(conn: psycopg.Connection[Any], name: str, subject: str = "*") -> tuple[float, bool] | None:
    return evaluated(conn).get((name, subject))


def add_sample(conn: psycopg.Connection[Any], worker: uuid.UUID, at: dt.datetime, **values: float) -> None:
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(f"INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at, {names})"
                 f" VALUES (%s, 'heartbeat', 1, %s, {marks})", (worker, at, *values.values()))


def test_an_empty_database_fires_nothing_and_shows_the_global_rules(conn: psycopg.Connection[Any]) -> None:
    seen = evaluated(conn)
    assert seen[("dlq_size", "*")] == (0.0, False)
    assert seen[("heartbeat_timeouts", "*")] == (0.0, False)
    assert not any(firing for _, firing in seen.values())
    assert alerts.status(alerts.evaluate(conn, HealthQueries("pgq"))) == ("ok", 0)


def test_dlq_size_fires_above_100_open_dead_letters(conn: psycopg.Connection[Any]) -> None:
    jobs = [insert_job(conn, status="dead") for _ in range(101)]
    for job in jobs[:100]:
        insert_dead_letter(conn, job)
    assert rule(conn, "dlq_size") == (100.0, False)
    insert_dead_letter(conn, jobs[100])
    assert rule(conn, "dlq_size") == (101.0, True)
    assert alerts.status(alerts.evaluate(conn, HealthQueries("pgq"))) == ("critical", 2)
    conn.execute("UPDATE pgq.dead_letter_queue SET requeued_at = now() WHERE job_id = %s", (jobs[0],))
    assert rule(conn, "dlq_size") == (100.0, False)  # a requeued one is no longer open


def test_worker_failure_rate_counts_failing_scores_and_recent_stale_workers(conn: psycopg.Connection[Any],
                                                                           now: dt.datetime) -> None:
    for _ in range(9):
        insert_worker(conn)
    insert_worker(conn, health_score=0.2)  # failing: 1 of 10
    insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(hours=3))  # outside the hour
    insert_worker(conn, status="stopped", last_heartbeat=now - dt.timedelta(hours=3))
    assert rule(conn, "worker_failure_rate") == (pytest.approx(0.1), False)
    insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=10))
    value, firing = rule(conn, "worker_failure_rate") or (None, None)
    assert (value, firing) == (pytest.approx(2 / 11), True)


def test_queue_saturation_fires_when_capacity_is_full_and_due_jobs_wait(conn: psycopg.Connection[Any],
                                                                        now: dt.datetime) -> None:
    worker = insert_worker(conn, queues=["reports"], capacity=4)
    insert_worker(conn, queues=["reports"], capacity=6, status="stopped")  # not live: no capacity
    for _ in range(3):
        insert_job(conn, queue="reports", status="running", worker_id=worker, started_at=now)
    insert_job(conn, queue="reports")  # due, waiting
    assert rule(conn, "queue_saturation", "reports") == (0.75, False)
    insert_job(conn, queue="reports", status="running", worker_id=worker, started_at=now)
    assert rule(conn, "queue_saturation", "reports") == (1.0, True)
    conn.execute("UPDATE pgq.jobs SET run_at = now() + interval '1 hour' WHERE status = 'queued'")
    assert rule(conn, "queue_saturation", "reports") == (0.0, False)  # full, but nothing waits


def test_pool_usage_is_connections_over_max_connections(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT current_setting('max_connections')::float8").fetchone()
    assert row is not None
    value, _ = rule(conn, "pool_usage") or (0.0, None)
    assert 1 / row[0] <= value <= 1  # this test's own connection at least
    conn.execute("UPDATE pgq.alert_rules SET threshold = %s WHERE rule = 'pool_usage'", (value / 2,))
    assert rule(conn, "pool_usage") == (pytest.approx(value, abs=0.05), True)


def test_retry_rate_fires_above_5_percent_of_attempts_in_the_window(conn: psycopg.Connection[Any],
                                                                    now: dt.datetime) -> None:
    a, b = insert_worker(conn), insert_worker(conn)
    add_sample(conn, a, now - dt.timedelta(minutes=2), jobs_completed=10, jobs_failed=0)
    assert rule(conn, "retry_rate") is None  # fewer than 20 attempts: nothing to say
    add_sample(conn, b, now - dt.timedelta(minutes=1), jobs_completed=85, jobs_failed=5)
    add_sample(conn, a, now - dt.timedelta(hours=2), jobs_completed=0, jobs_failed=500)  # outside the hour
    assert rule(conn, "retry_rate") == (0.05, False)
    add_sample(conn, b, now, jobs_completed=0, jobs_failed=1)
    assert rule(conn, "retry_rate") == (pytest.approx(6 / 101), True)
    assert alerts.status(alerts.evaluate(conn, HealthQueries("pgq"))) == ("warning", 1)


def test_duration_fires_above_twice_the_workers_baseline(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    worker = insert_worker(conn)
    for minutes in range(10, 50, 5):  # 8 samples at 10 ms, 10 to 45 minutes ago
        add_sample(conn, worker, now - dt.timedelta(minutes=minutes), latency_p50_ms=10.0)
    add_sample(conn, worker, now - dt.timedelta(minutes=1), latency_p50_ms=20.0)
    assert rule(conn, "duration_vs_baseline", str(worker)) == (2.0, False)  # baseline: lower quartile, 10
    add_sample(conn, worker, now, latency_p50_ms=24.0)
    assert rule(conn, "duration_vs_baseline", str(worker)) == (2.2, True)  # mean of the last 5 minutes: 22


def test_heartbeat_timeouts_fire_above_3_stale_workers_in_the_hour(conn: psycopg.Connection[Any],
                                                                   now: dt.datetime) -> None:
    for minutes in (5, 20, 40):
        insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=minutes))
    insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=90))
    assert rule(conn, "heartbeat_timeouts") == (3.0, False)
    insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=50))
    assert rule(conn, "heartbeat_timeouts") == (4.0, True)


def test_rules_are_configurable_rows(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE pgq.alert_rules SET threshold = -1, severity = 'warning' WHERE rule = 'dlq_size'")
    assert rule(conn, "dlq_size") == (0.0, True)
    assert alerts.status(alerts.evaluate(conn, HealthQueries("pgq"))) == ("warning", 1)
    conn.execute("UPDATE pgq.alert_rules SET enabled = false WHERE rule = 'dlq_size'")
    assert rule(conn, "dlq_size") is None


@pytest.mark.parametrize(("change", "constraint"), [
    ("severity = 'page'", "alert_rules_severity"),
    ("window_seconds = 0", "alert_rules_window_positive"),
    ("threshold = 'Infinity'", "alert_rules_threshold_finite"),
])
def test_a_bad_rule_is_refused(conn: psycopg.Connection[Any], change: str, constraint: str) -> None:
    import factories

    with factories.raises_sqlstate("23514", match=constraint):
        conn.execute(f"UPDATE pgq.alert_rules SET {change} WHERE rule = 'retry_rate'")
