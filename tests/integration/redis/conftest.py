"""Fixtures for the Redis accelerator's own tests.

``rsettings``: Postgres plus the session's Redis (a key prefix of this test's
own, the mirror built) with short worker intervals and a *long* safety-net
poll, so a job that runs was delivered by Redis, not found by polling
Postgres. ``owned_redis``: a redis-server process of this test's own, for
FLUSHALL, kill -9 and restarts (never done to the shared server).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pgq
from redis_service import OwnedRedis, accelerated, delete_prefix, unique_prefix

WAIT = 20.0


def short(settings: pgq.Settings) -> pgq.Settings:
    return settings.replace(heartbeat_interval_seconds=0.5, stale_after_seconds=1.0, poll_interval_seconds=0.2,
                            shutdown_grace_seconds=2, redis_reconcile_interval_seconds=0.2)


@pytest.fixture
def rsettings(settings: pgq.Settings, redis_url: str, redis_prefix: str) -> pgq.Settings:
    return accelerated(short(settings), redis_url, redis_prefix, redis_poll_interval_seconds=600.0)


@pytest.fixture
def short_settings(settings: pgq.Settings) -> pgq.Settings:
    """``settings`` with the short intervals of the Redis tests (no Redis yet)."""
    return short(settings)


@pytest.fixture
def owned_redis() -> Iterator[OwnedRedis]:
    server = OwnedRedis().start()
    yield server
    server.stop()


@pytest.fixture
def owned_settings(settings: pgq.Settings, owned_redis: OwnedRedis) -> Iterator[pgq.Settings]:
    prefix = unique_prefix()
    yield accelerated(short(settings), owned_redis.url, prefix, redis_poll_interval_seconds=600.0)
    delete_prefix(owned_redis.url, prefix)


class Running:
    """A worker's run() in a background thread."""

    def __init__(self, worker: pgq.Worker, *, burst: bool = False) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(burst,), name="test-worker", daemon=True)
        self.thread.start()

    def _run(self, burst: bool) -> None:
        try:
            self.worker.run(burst=burst)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, *, now: bool = False, timeout: float = WAIT) -> None:
        self.worker.stop(now=now)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop in time"
        if self.error is not None:
            raise self.error


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    """Start ``worker.run()`` in a thread; every one still running is stopped after the test."""
    started: list[Running] = []

    def start(worker: pgq.Worker, **kwargs: Any) -> Running:
        r = Running(worker, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.worker.stop(now=True)
            r.thread.join(WAIT)
