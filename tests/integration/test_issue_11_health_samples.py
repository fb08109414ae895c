"""Issue 11, part 1: each heartbeat of a real worker records its health sample.

The worker runs real jobs against Postgres; handler durations come from an
injected ``ManualClock`` that each handler advances (nothing sleeps), so the
latency quantiles are known exactly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

import pgq
from pgq.clock import ManualClock
from pgq.worker.metrics import LOOP_PROBE_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

COLUMNS = ("health_score", "jobs_completed", "jobs_failed", "error_rate", "latency_p50_ms", "latency_p95_ms", "in_flight",
           "capacity", "stuck_handlers", "rss_bytes", "interval_seconds", "cpu_percent", "claim_rtt_ms",
           "ack_rtt_ms", "ack_lag_ms", "loop_lag_ms")


def samples(conn: psycopg.Connection[Any], worker: pgq.Worker) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT metric_type, " + ", ".join(COLUMNS)
                       + " FROM pgq.worker_health_logs WHERE worker_id = %s ORDER BY id", (worker.id,))
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def make_queue(settings: pgq.Settings, clock: ManualClock) -> pgq.Queue:
    q = pgq.Queue(settings, strict_tasks=False)

    @q.task(name="work", max_attempts=1)
    def work(ms: int, fail: bool = False) -> int:
        clock.advance(ms / 1000)
        if fail:
            raise RuntimeError("broken on purpose")
        return ms

    return q


def test_a_heartbeat_records_what_the_worker_did_since_the_last_one(settings: pgq.Settings,
                                                                    conn: psycopg.Connection[Any]) -> None:
    clock = ManualClock(1000.0)
    q = make_queue(settings, clock)
    try:
        # 18 jobs of 10 ms (ranks 0-17 once sorted), 2 of 200 ms that fail (ranks 18, 19):
        # p50 at rank 9.5 = 10 ms; p95 at rank 0.95 * 19 = 18.05, between two 200s = 200 ms.
        q.enqueue_many([{"task": "work", "payload": {"ms": 10}} for _ in range(18)]
                       + [{"task": "work", "payload": {"ms": 200, "fail": True}} for _ in range(2)])
        worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False,
                          run_maintenance=False, clock=clock)
        while worker.run_once():
            pass
        worker.heartbeat()
        clock.advance(30)
        worker.heartbeat()
        first, second = samples(conn, worker)
        assert first["metric_type"] == "heartbeat"
        assert (first["jobs_completed"], first["jobs_failed"]) == (18, 2)
        assert first["error_rate"] == pytest.approx(0.1)
        assert first["latency_p50_ms"] == pytest.approx(10, rel=1e-3)
        assert first["latency_p95_ms"] == pytest.approx(200, rel=1e-3)
        assert (first["in_flight"], first["capacity"], first["stuck_handlers"]) == (0, 1, 0)
        assert first["rss_bytes"] > 10_000_000  # a Python process with psycopg loaded
        assert first["claim_rtt_ms"] is not None and first["ack_rtt_ms"] is not None
        assert first["interval_seconds"] is None  # the first sample counts from the start
        assert first["loop_lag_ms"] is None  # no async handler ran
        # Score (docs/health.md): errors 1 - 1.4 * 2 / (20 + 3); no latency baseline yet, no
        # stuck handler, outcomes written well within a second, no memory limit: 0.8783.
        assert first["health_score"] == pytest.approx(0.8783, abs=1e-4)
        assert second["health_score"] == 1.0
        row = conn.execute("SELECT health_score FROM pgq.workers WHERE id = %s", (worker.id,)).fetchone()
        assert row == (1.0,)
        # The second covers the 30 s since the first: nothing ran.
        assert (second["jobs_completed"], second["jobs_failed"], second["error_rate"]) == (0, 0, None)
        assert second["interval_seconds"] == pytest.approx(30)
        assert second["latency_p50_ms"] is None and second["claim_rtt_ms"] is None
    finally:
        q.close()


def test_async_handlers_report_the_event_loop_lag(settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    q = pgq.Queue(settings, strict_tasks=False)

    @q.task(name="tick")
    async def tick() -> None:
        return None

    try:
        q.enqueue("tick")
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        assert worker.run_once() == 1
        # The probe was scheduled on the loop when it started, LOOP_PROBE_SECONDS ahead; a
        # timer scheduled later for longer runs after it (the loop runs timers in due order),
        # so once this one has run, the probe has reported. Nothing is guessed.
        metrics = worker.counters.metrics
        loop = worker._runner._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(asyncio.sleep(LOOP_PROBE_SECONDS + 0.05), loop).result(timeout=10)
        worker.heartbeat()
        [sample] = samples(conn, worker)
        assert sample["loop_lag_ms"] is not None and sample["loop_lag_ms"] >= 0
        assert metrics.enabled
    finally:
        q.close()


def test_sampling_off_sends_the_plain_heartbeat(settings: pgq.Settings, conn: psycopg.Connection[Any]) -> None:
    clock = ManualClock()
    q = make_queue(settings.replace(health_sampling=False), clock)
    try:
        q.enqueue("work", {"ms": 5})
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False, clock=clock)
        assert worker.run_once() == 1
        worker.heartbeat()
        assert samples(conn, worker) == []
        row = conn.execute("SELECT last_heartbeat > now() - interval '1 minute' FROM pgq.workers WHERE id = %s",
                           (worker.id,)).fetchone()
        assert row == (True,)  # the heartbeat itself was recorded
        assert worker.counters.metrics.enabled is False
    finally:
        q.close()


def test_maintenance_prunes_samples_past_the_retention(settings: pgq.Settings, conn: psycopg.Connection[Any],
                                                       now: dt.datetime) -> None:
    import factories

    worker = factories.insert_worker(conn)
    conn.execute(
        "INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at)"
        " SELECT %s, 'heartbeat', 1, %s - make_interval(hours => i) FROM generate_series(0, 9) AS i",
        (worker, now))
    q = pgq.Queue(settings.replace(health_retention_seconds=3.5 * 3600, prune_batch_size=2), strict_tasks=False)
    try:
        report = pgq.Maintenance(q.settings, q.pool).run_once()
        assert report.leader and report.health_samples_pruned == 6
        kept = conn.execute("SELECT count(*) FROM pgq.worker_health_logs").fetchone()
        assert kept == (4,)  # 0, 1, 2 and 3 hours old
    finally:
        q.close()


def test_a_worker_whose_handlers_slow_down_scores_itself_failing(settings: pgq.Settings,
                                                                 conn: psycopg.Connection[Any]) -> None:
    clock = ManualClock(1000.0)
    q = make_queue(settings, clock)
    try:
        worker = q.worker(queues=["default"], concurrency=1, install_signal_handlers=False,
                          run_maintenance=False, clock=clock)
        # Three healthy intervals of 10 ms jobs make the baseline (10 ms), then 80 ms jobs:
        # speed = 2 * 10 / 80 = 0.25, below the failing threshold of 0.3.
        for ms in (10, 10, 10, 80):
            q.enqueue_many([{"task": "work", "payload": {"ms": ms}} for _ in range(5)])
            while worker.run_once():
                pass
            worker.heartbeat()
            clock.advance(30)
        scores = [s["health_score"] for s in samples(conn, worker)]
        assert scores == [1.0, 1.0, 1.0, 0.25]
        row = conn.execute("SELECT health_score FROM pgq.workers WHERE id = %s", (worker.id,)).fetchone()
        assert row == (0.25,)
    finally:
        q.close()


def test_a_sample_the_database_refuses_or_that_fails_costs_the_sample_not_the_heartbeat(
    settings: pgq.Settings, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    q = make_queue(settings, ManualClock())
    try:
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        q.enqueue("work", {"ms": 1})
        assert worker.run_once() == 1
        metrics = worker.counters.metrics
        real = metrics.sample

        def out_of_range(**kwargs: Any) -> Any:
            values, mark = real(**kwargs)
            return {**values, "error_rate": 2.0}, mark  # the CHECK refuses it

        def broken(**kwargs: Any) -> Any:
            raise RuntimeError("no /proc here")

        for fake, said in ((out_of_range, "refused this worker's health sample"), (broken, "no /proc here")):
            conn.execute("UPDATE pgq.workers SET last_heartbeat = now() - interval '1 minute' WHERE id = %s",
                         (worker.id,))
            monkeypatch.setattr(metrics, "sample", fake)
            caplog.clear()
            worker.heartbeat()
            row = conn.execute("SELECT last_heartbeat > now() - interval '30 seconds' FROM pgq.workers"
                               " WHERE id = %s", (worker.id,)).fetchone()
            assert row == (True,), "the heartbeat itself must be recorded"
            assert said in caplog.text
        assert samples(conn, worker) == []
        monkeypatch.setattr(metrics, "sample", real)
        worker.heartbeat()
        assert len(samples(conn, worker)) == 1  # and the next sample goes through
    finally:
        q.close()
