"""Issue 11, part 6: `pgq health [--check] [--json]` and `pgq workers health` against a real database."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from factories import insert_dead_letter, insert_job, insert_worker
from pgq.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, db_url: str) -> CliRunner:
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    return CliRunner()


def test_check_exits_0_1_2_for_ok_warning_critical(runner: CliRunner, conn: psycopg.Connection[Any],
                                                   now: dt.datetime) -> None:
    ok = runner.invoke(main, ["health", "--check"])
    assert (ok.exit_code, ok.output.splitlines()[0]) == (0, "status: ok"), ok.output
    for _ in range(40):
        insert_worker(conn)
    # 4 heartbeat timeouts in the hour: a warning (4 of 44 workers stale: below the 10 % critical).
    for minutes in (5, 10, 15, 20):
        insert_worker(conn, status="stale", last_heartbeat=now - dt.timedelta(minutes=minutes))
    warning = runner.invoke(main, ["health", "--check"])
    assert warning.exit_code == 1, warning.output
    assert "heartbeat_timeouts" in warning.output and "FIRING" in warning.output
    for _ in range(101):
        insert_dead_letter(conn, insert_job(conn, status="dead"))
    critical = runner.invoke(main, ["health", "--check", "--json"])
    assert critical.exit_code == 2, critical.output
    report = json.loads(critical.output)
    assert report["status"] == "critical"
    firing = {(a["rule"], a["severity"]) for a in report["alerts"] if a["firing"]}
    assert firing == {("dlq_size", "critical"), ("heartbeat_timeouts", "warning")}


def test_without_check_it_summarises_and_exits_0_even_when_rules_fire(runner: CliRunner,
                                                                      conn: psycopg.Connection[Any]) -> None:
    insert_worker(conn, health_score=0.1)
    result = runner.invoke(main, ["health"])
    assert result.exit_code == 0, result.output
    assert "status: critical" in result.output  # worker_failure_rate: 1 of 1 failing
    assert "dlq_size" in result.output  # every evaluated rule is listed


def test_check_exits_3_when_the_database_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    monkeypatch.setenv("PGQ_START_TIMEOUT_SECONDS", "0")
    result = CliRunner().invoke(main, ["health", "--check"])
    assert result.exit_code == 3, result.output
    assert "could not check" in result.output


def test_workers_health_shows_score_trend_anomalies_and_prediction(runner: CliRunner,
                                                                   conn: psycopg.Connection[Any],
                                                                   now: dt.datetime) -> None:
    workers = [insert_worker(conn, queues=["emails"]) for _ in range(4)]
    for i in range(30):
        at = now - dt.timedelta(seconds=30 * (29 - i))
        for n, w in enumerate(workers):
            score = 0.9 - 0.5 * i / 29 if n == 3 else 1.0
            p50 = 80.0 if n == 2 else 10.0
            conn.execute("INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at,"
                         " latency_p50_ms, health_score) VALUES (%s, 'heartbeat', %s, %s, %s, %s)",
                         (w, score, at, p50, score))
    result = runner.invoke(main, ["workers", "health", "--json"])
    assert result.exit_code == 0, result.output
    shown = {row["worker_id"]: row for row in json.loads(result.output)}
    slow, declining = shown[str(workers[2])], shown[str(workers[3])]
    assert [(a["metric"], a["against"]) for a in slow["anomalies"]] == [("latency_p50_ms", "peers")]
    assert declining["score"] == pytest.approx(0.4) and declining["state"] == "degraded"
    assert declining["trend_per_hour"] == pytest.approx(-0.5 / (29 * 30) * 3600, rel=1e-3)
    # 0.1 above 0.3, losing 0.5 per 870 s: 174 s.
    assert declining["failure"]["seconds"] == pytest.approx(174, rel=0.02)
    assert shown[str(workers[0])]["failure"] is None and shown[str(workers[0])]["anomalies"] == []
    table = runner.invoke(main, ["workers", "health"])
    assert table.exit_code == 0 and "latency_p50_ms(peers)" in table.output and "degraded" in table.output
    # Plain `pgq workers` shows the same trend, anomalies and prediction beside the registry.
    listed = runner.invoke(main, ["workers"])
    assert listed.exit_code == 0, listed.output
    assert all(h in listed.output.splitlines()[0] for h in ("score", "trend", "anomalies", "fails in"))
    line = next(row for row in listed.output.splitlines() if row.startswith(str(workers[3])[:8]))
    assert f"{declining['trend_per_hour']:+.2f}/h" in line and "3m" in line  # 174 s: fails in 3m
    slow_line = next(row for row in listed.output.splitlines() if row.startswith(str(workers[2])[:8]))
    assert "latency_p50_ms(peers)" in slow_line
    as_json = {row["id"]: row for row in json.loads(runner.invoke(main, ["workers", "--json"]).output)}
    assert as_json[str(workers[3])]["health"]["score"] == pytest.approx(0.4)
