"""The queue-level exporter, ``pgq metrics`` (issue 11, item 7), and ``collect_metrics()``.

States are built in the database with the factories; the function is checked
with a pinned ``p_now``, the exporter over HTTP (parsed with prometheus_client's
parser), the CLI as a real process, and a database outage answers
``pgq_up 0`` instead of a failed scrape.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import factories
import pgq
from factories import eventually
from metrics_support import Samples, free_port, scrape, value
from pgq.health.queue_exporter import serve_queue_metrics
from tcp_proxy import CuttingProxy

pytestmark = pytest.mark.integration


class State:
    """Jobs, dead letters and workers in known numbers (see ``state``)."""

    def __init__(self, conn: psycopg.Connection[Any], now: dt.datetime) -> None:
        self.active = factories.insert_worker(conn, health_score=0.75, queues=["a", "b"])
        self.draining = factories.insert_worker(conn, status="draining", health_score=0.25)
        factories.insert_worker(conn, status="stale")
        factories.insert_worker(conn, status="stopped")
        for seconds in (60, 30, 0):
            factories.insert_job(conn, queue="a", run_at=now - dt.timedelta(seconds=seconds))
        factories.insert_job(conn, queue="a", priority=5, run_at=now + dt.timedelta(hours=1))  # not due
        for _ in range(2):
            factories.insert_job(conn, queue="a", status="running", worker_id=self.active)
        factories.insert_job(conn, queue="a", status="waiting")
        factories.insert_job(conn, queue="b", status="retrying", run_at=now - dt.timedelta(seconds=10))
        for _ in range(2):
            factories.insert_dead_letter(conn, factories.insert_job(conn, queue="b", status="dead"))
        factories.insert_job(conn, queue="b", status="completed")  # finished: not counted
        factories.insert_job(conn, queue="c", priority=1, run_at=now + dt.timedelta(minutes=5))


@pytest.fixture
def state(conn: psycopg.Connection[Any], now: dt.datetime) -> State:
    return State(conn, now)


def rows_by_metric(conn: psycopg.Connection[Any], now: dt.datetime) -> dict[str, dict[tuple[Any, ...], float]]:
    found: dict[str, dict[tuple[Any, ...], float]] = {}
    for metric, queue, status, priority, worker_id, v in conn.execute(
            "SELECT * FROM pgq.collect_metrics(%s)", [now]).fetchall():
        found.setdefault(metric, {})[(queue, status, priority, worker_id)] = v
    return found


def test_collect_metrics_reads_the_state(conn: psycopg.Connection[Any], now: dt.datetime, state: State) -> None:
    found = rows_by_metric(conn, now)
    assert found["jobs"] == {
        ("a", "queued", 3, None): 3, ("a", "queued", 5, None): 1, ("a", "running", 3, None): 2,
        ("a", "waiting", 3, None): 1, ("b", "retrying", 3, None): 1, ("b", "dead", 3, None): 2,
        ("c", "queued", 1, None): 1,
    }
    # The oldest due job of a waited 60 s, b's retry 10 s; c has nothing due.
    assert found["oldest_due_age"] == {("a", None, None, None): 60, ("b", None, None, None): 10,
                                       ("c", None, None, None): 0}
    assert found["dead_letters"] == {("b", None, None, None): 2}
    assert found["workers"] == {(None, "active", None, None): 1, (None, "draining", None, None): 1,
                                (None, "stale", None, None): 1, (None, "stopped", None, None): 1}
    assert found["worker_health"] == {(None, "active", None, state.active): 0.75,
                                      (None, "draining", None, state.draining): 0.25}


def test_collect_metrics_of_an_empty_database_counts_no_jobs_and_every_worker_status(
        conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    found = rows_by_metric(conn, now)
    assert set(found) == {"workers"}
    assert set(found["workers"].values()) == {0}


@pytest.fixture
def exporter(settings: pgq.Settings) -> Iterator[int]:
    server = serve_queue_metrics(settings, free_port(), "127.0.0.1")
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_exporter_publishes_the_state(exporter: int, state: State) -> None:
    samples = scrape(exporter)
    assert value(samples, "pgq_up") == 1
    assert value(samples, "pgq_queue_jobs", queue="a", status="queued", priority="3") == 3
    assert value(samples, "pgq_queue_jobs", queue="b", status="dead", priority="3") == 2
    assert value(samples, "pgq_queue_jobs", queue="b", status="completed", priority="3") is None
    age = value(samples, "pgq_queue_oldest_due_age_seconds", queue="a")
    assert age is not None and 60 <= age < 120  # the database clock moved on since the state was built
    assert value(samples, "pgq_queue_dead_letters", queue="b") == 2
    assert value(samples, "pgq_workers", status="stale") == 1
    assert value(samples, "pgq_worker_health_score", worker_id=str(state.active)) == 0.75
    assert sum(v for (name, _), v in samples.items() if name == "pgq_queue_jobs") == 11


def test_a_connection_lost_mid_scrape_is_pgq_up_0_then_the_next_scrape_recovers(
        settings: pgq.Settings, db_url: str, state: State) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    with CuttingProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)) as proxy:
        server = serve_queue_metrics(settings.replace(database_url=proxy.url(db_url)), free_port(), "127.0.0.1")
        try:
            port = int(server.server_address[1])
            assert value(scrape(port), "pgq_up") == 1
            proxy.cut_before(b"collect_metrics")  # the server goes away as the statement is sent
            down = scrape(port)
            again = scrape(port)
        finally:
            server.shutdown()
            server.server_close()
    assert proxy.cuts, "the cut must have happened"
    assert value(down, "pgq_up") == 0
    assert not [name for name, _ in down if name.startswith("pgq_queue_")]
    assert value(down, "pgq_scrape_duration_seconds") is not None
    assert value(again, "pgq_up") == 1
    assert value(again, "pgq_queue_dead_letters", queue="b") == 2


def test_an_unreachable_database_is_pgq_up_0_from_the_start(settings: pgq.Settings) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    server = serve_queue_metrics(settings.replace(database_url=unreachable), free_port(), "127.0.0.1")
    try:
        samples = scrape(int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
    assert value(samples, "pgq_up") == 0
    assert [name for name, _ in samples] == ["pgq_up", "pgq_scrape_duration_seconds"]


def test_pgq_metrics_command_serves_until_sigterm(db_url: str, state: State) -> None:
    port = free_port()
    env = {**os.environ, "PGQ_DATABASE_URL": db_url}
    process = subprocess.Popen([sys.executable, "-m", "pgq", "metrics", "--port", str(port), "--address", "127.0.0.1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        samples: Samples = eventually(lambda: _try_scrape(port), "pgq metrics to serve", 30)
        assert value(samples, "pgq_up") == 1
        assert value(samples, "pgq_workers", status="active") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"127.0.0.1:{port}/metrics" in err


def test_pgq_metrics_once_prints_one_scrape(db_url: str, state: State) -> None:
    result = subprocess.run([sys.executable, "-m", "pgq", "--database-url", db_url, "metrics", "--once"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pgq_up 1.0" in result.stdout
    assert 'pgq_queue_dead_letters{queue="b"} 2.0' in result.stdout


def _try_scrape(port: int) -> Samples | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_worker_ids_are_labels_of_their_own_row(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    ids = {factories.insert_worker(conn, health_score=0.5) for _ in range(3)}
    found = rows_by_metric(conn, now)["worker_health"]
    assert {key[3] for key in found} == ids and all(isinstance(i, uuid.UUID) for i in ids)
