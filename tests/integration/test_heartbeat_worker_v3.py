"""pgq.heartbeat_worker_v3 (revision 0008): a heartbeat and the worker's health sample in one statement."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest

import factories
from factories import insert_job, insert_worker, raises_sqlstate

pytestmark = pytest.mark.integration

BEAT = "SELECT status::text, previous_status::text, lost_job_ids, rescued_job_ids" \
       " FROM pgq.heartbeat_worker_v3(%s, %s, %s::bigint[], %s, %s::jsonb, %s)"

SAMPLE = {
    "interval_seconds": 30.0, "jobs_completed": 118, "jobs_failed": 2, "error_rate": 2 / 120,
    "latency_p50_ms": 12.5, "latency_p95_ms": 40.25, "claim_rtt_ms": 1.5, "ack_rtt_ms": 2.0, "ack_lag_ms": 8.0,
    "in_flight": 3, "capacity": 16, "stuck_handlers": 0, "rss_bytes": 52_428_800, "cpu_percent": 35.5,
    "loop_lag_ms": 4.0, "health_score": 0.875,
}
COLUMNS = list(SAMPLE)


def samples(conn: psycopg.Connection[Any], worker_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT metric_type, metric_value, logged_at, " + ", ".join(COLUMNS)
        + " FROM pgq.worker_health_logs WHERE worker_id = %s ORDER BY id", (worker_id,))
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_records_the_sample_as_one_row_and_the_score_on_the_worker(conn: psycopg.Connection[Any],
                                                                   now: dt.datetime) -> None:
    worker_id = insert_worker(conn)
    at = now + dt.timedelta(seconds=30)
    beat = conn.execute(BEAT, (worker_id, 3, [], 0, json.dumps(SAMPLE), at)).fetchone()
    assert beat == ("active", "active", [], [])
    [row] = samples(conn, worker_id)
    assert (row["metric_type"], row["metric_value"], row["logged_at"]) == ("heartbeat", 0.875, at)
    for name, value in SAMPLE.items():
        assert row[name] == pytest.approx(value, rel=1e-6), name
    w = factories.worker(conn, worker_id)
    assert (w["health_score"], w["last_heartbeat"], w["current_load"]) == (0.875, at, 3)


def test_a_partial_sample_stores_nulls_and_keeps_the_workers_score(conn: psycopg.Connection[Any],
                                                                    now: dt.datetime) -> None:
    worker_id = insert_worker(conn, health_score=0.5)
    conn.execute(BEAT, (worker_id, 0, [], None, json.dumps({"jobs_completed": 4, "rss_bytes": None}), now))
    [row] = samples(conn, worker_id)
    assert row["jobs_completed"] == 4 and row["rss_bytes"] is None and row["health_score"] is None
    assert row["metric_value"] == 0.5  # the stored score, unchanged
    assert factories.worker(conn, worker_id)["health_score"] == 0.5


def test_no_sample_is_exactly_heartbeat_v2(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    worker_id = insert_worker(conn)
    job = insert_job(conn, status="running", worker_id=worker_id, started_at=now - dt.timedelta(minutes=1))
    listed = insert_job(conn, status="running", worker_id=worker_id, started_at=now - dt.timedelta(minutes=1))
    beat = conn.execute(BEAT, (worker_id, 1, [listed, 999_999], None, None, now)).fetchone()
    # The owned job it did not list is rescued as ClaimLost; 999999 is not its own.
    assert beat == ("active", "active", [999_999], [job])
    assert samples(conn, worker_id) == []


@pytest.mark.parametrize(("sample", "code", "match"), [
    ({"jobs": 3}, "PQ004", "unknown sample keys"),
    ({"jobs_completed": "3"}, "PQ004", "jobs_completed"),
    ({"health_score": [1]}, "PQ004", "health_score"),
    ([1, 2], "PQ004", "must be a JSON object"),
    ({"health_score": 1.5}, "23514", "workers_health_range"),
    ({"error_rate": -0.1}, "23514", "worker_health_logs_sample_ranges"),
    ({"latency_p95_ms": -1}, "23514", "worker_health_logs_sample_ranges"),
    ({"jobs_failed": 2.5}, "22P02", "integer"),
])
def test_a_bad_sample_is_refused_and_records_nothing_not_even_the_heartbeat(
    conn: psycopg.Connection[Any], now: dt.datetime, sample: Any, code: str, match: str,
) -> None:
    worker_id = insert_worker(conn, last_heartbeat=now - dt.timedelta(seconds=40))
    before = factories.snapshot(conn)
    with raises_sqlstate(code, match=match):
        conn.execute(BEAT, (worker_id, 0, [], None, json.dumps(sample), now))
    assert factories.snapshot(conn) == before


def test_a_stopped_or_unknown_worker_is_refused_and_no_sample_is_kept(conn: psycopg.Connection[Any],
                                                                      now: dt.datetime) -> None:
    stopped = insert_worker(conn, status="stopped")
    before = factories.snapshot(conn)
    for worker_id in (stopped, uuid.uuid4()):
        with raises_sqlstate("PQ002"):
            conn.execute(BEAT, (worker_id, 0, [], None, json.dumps(SAMPLE), now))
    assert factories.snapshot(conn) == before


def test_a_worker_back_from_stale_records_its_sample(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    worker_id = insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=5))
    beat = conn.execute(BEAT, (worker_id, 0, [], None, json.dumps({"jobs_completed": 0}), now)).fetchone()
    assert beat is not None and beat[:2] == ("active", "stale")
    assert len(samples(conn, worker_id)) == 1
