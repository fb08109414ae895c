"""Fixtures for the integration tests of the stored functions.

The database machinery (server discovery, the migrated template, one clone
per test: ``server_url``, ``db_url``, ``conn``, ``settings``, ``connect``)
lives in ``tests/conftest.py`` so that property tests can share it. Here are
the small things most stored-function tests need on top: the database clock,
an active worker, a LISTENing connection.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import factories
import pgq


@pytest.fixture
def now(conn: psycopg.Connection[Any]) -> dt.datetime:
    """The database clock at the start of the test. Tests pass ``now + delta`` as
    ``p_now`` to time-dependent functions instead of sleeping."""
    return factories.db_now(conn)


@pytest.fixture
def worker_id(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """An active worker (fresh heartbeat) that claims from the ``default`` queue."""
    return factories.insert_worker(conn, queues=["default"])


@pytest.fixture
def other_worker_id(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """A second active worker."""
    return factories.insert_worker(conn, queues=["default"], hostname="other-host")


@pytest.fixture
def listener(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """An autocommit connection LISTENing on ``pgq_job_available`` and ``pgq_job_cancelled``."""
    conn = connect()
    for channel in ("pgq_job_available", "pgq_job_cancelled"):
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


@pytest.fixture
def drain_notifications(
    listener: psycopg.Connection[Any], conn: psycopg.Connection[Any],
) -> Callable[[], list[tuple[str, str]]]:
    """Call to get (channel, payload) of every notification ``listener`` got so far."""
    return lambda: factories.drain_notifications(listener, conn)


@pytest.fixture
def short(settings: pgq.Settings) -> pgq.Settings:
    """Settings with short heartbeats, polls and grace, for worker tests that must not wait."""
    return settings.replace(heartbeat_interval_seconds=0.5, stale_after_seconds=1.0, poll_interval_seconds=0.2,
                            shutdown_grace_seconds=2)


@pytest.fixture
def running() -> Iterator[Callable[..., factories.RunningWorker]]:
    """``running(worker, wait=20.0)``: start ``worker.run()`` in a thread; stopped (now) at teardown."""
    started: list[factories.RunningWorker] = []

    def start(worker: pgq.Worker, wait: float = 20.0) -> factories.RunningWorker:
        started.append(factories.RunningWorker(worker, wait))
        return started[-1]

    yield start
    for r in started:
        if r.thread.is_alive():
            r.worker.stop(now=True)
            r.thread.join(r.wait)
