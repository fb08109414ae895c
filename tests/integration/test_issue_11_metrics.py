"""The worker's Prometheus exporter, Postgres-only (issue 11, item 7).

Scraped over HTTP, parsed with prometheus_client's parser, checked against the
jobs the test enqueued (the scenario is in ``metrics_support``; the Redis test
runs the same one). Also: process-isolated handlers are counted by the worker
process, the health score gauge is the score the heartbeat stored, a port in
use is a clear error, and a worker without a port serves nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import process_handlers
import psycopg
import pytest

import pgq
from factories import RunningWorker, eventually
from metrics_support import Samples, free_port, scrape, value, worker_scenario

pytestmark = pytest.mark.integration


@pytest.fixture
def q(short: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=short)
    yield queue
    queue.close()


def test_scrape_counts_what_the_worker_did(q: pgq.Queue, running: Callable[..., RunningWorker]) -> None:
    samples, worker = worker_scenario(q, running)
    assert value(samples, "pgq_worker_jobs_released_total") == 0
    assert value(samples, "pgq_worker_events_total", event="redis_claimed") is None


def test_process_isolated_handlers_are_counted_by_the_worker_process(q: pgq.Queue) -> None:
    q.task(name="add", isolation="process")(process_handlers.add)
    q.enqueue_many([{"task": "add", "payload": {"a": i, "b": 1}} for i in range(3)])
    worker = q.worker(concurrency=2, metrics_port=free_port(), install_signal_handlers=False)
    try:
        ran = 0
        while ran < 3:
            ran += worker.run_once()
        assert worker.metrics_port is not None
        samples = scrape(worker.metrics_port)
    finally:
        worker.close_metrics()
        worker._runner.close_processes()
    labels = {"queue": "default", "task": "add"}
    assert value(samples, "pgq_jobs_started_total", **labels) == 3
    assert value(samples, "pgq_jobs_completed_total", **labels) == 3
    assert value(samples, "pgq_job_duration_seconds_count", **labels) == 3


def test_health_score_gauge_is_the_score_the_heartbeat_stored(q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
    @q.task(name="noop")
    def noop() -> None:
        pass

    q.enqueue("noop")
    worker = q.worker(metrics_port=free_port(), install_signal_handlers=False)
    try:
        assert worker.run_once() == 1
        assert worker.metrics_port is not None
        before = scrape(worker.metrics_port)
        worker.heartbeat()
        after = scrape(worker.metrics_port)
    finally:
        worker.close_metrics()
    (stored,) = conn.execute("SELECT health_score FROM pgq.workers WHERE id = %s", [worker.id]).fetchone()
    assert value(before, "pgq_worker_health_score", worker_id=str(worker.id)) is None  # no sample yet
    assert value(after, "pgq_worker_health_score", worker_id=str(worker.id)) == pytest.approx(stored, abs=1e-6)


def test_a_port_in_use_is_a_configuration_error(q: pgq.Queue) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = q.worker(metrics_port=port, install_signal_handlers=False)
        with pytest.raises(pgq.ConfigurationError, match=f"cannot serve metrics on .*:{port}"):
            worker.run_once()


def test_without_a_port_nothing_is_recorded_or_served(q: pgq.Queue) -> None:
    worker = q.worker(install_signal_handlers=False)
    assert worker.counters.exporter is None
    assert worker.run_once() == 0
    assert worker.metrics_port is None


@pytest.mark.parametrize("port", [-1, 65536, "9100", True])
def test_a_bad_metrics_port_is_refused(q: pgq.Queue, port: Any) -> None:
    with pytest.raises(pgq.ValidationError, match="metrics_port"):
        q.worker(metrics_port=port)


def test_pgq_worker_metrics_port_serves_while_the_worker_runs(db_url: str, settings: pgq.Settings,
                                                                tmp_path: Path) -> None:
    (tmp_path / "metrics_app.py").write_text(textwrap.dedent("""
        import pgq
        q = pgq.connect()

        @q.task(name="metrics_app.triple")
        def triple(n: int) -> int:
            return 3 * n
    """))
    with pgq.Queue(settings, strict_tasks=False) as q:
        q.enqueue_many([{"task": "metrics_app.triple", "payload": {"n": n}} for n in range(3)])
    port = free_port()
    env = {**os.environ, "PGQ_DATABASE_URL": db_url, "PGQ_METRICS_ADDRESS": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "-m", "pgq", "worker", "metrics_app:q", "--metrics-port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    labels = {"queue": "default", "task": "metrics_app.triple"}

    def all_completed() -> Samples | None:
        try:
            found = scrape(port)
        except OSError:
            return None
        return found if value(found, "pgq_jobs_completed_total", **labels) == 3 else None

    try:
        samples = eventually(all_completed, "the worker's scrape to count 3 completions", 60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert value(samples, "pgq_jobs_started_total", **labels) == 3
    with pytest.raises(OSError):
        scrape(port)  # the port closes with the worker
