"""Scraping pgq's Prometheus endpoints in tests, and the worker scenario both modes run.

``scrape`` reads ``/metrics`` over HTTP (urllib) and parses it with
prometheus_client's own parser into ``{(sample name, labels): value}``.
``worker_scenario`` enqueues jobs that complete, fail and time out, runs a
worker with its exporter until they are done, and checks what a scrape says
against what the test enqueued (the Postgres-only and Redis tests share it).
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import pgq
from factories import RunningWorker, eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """GET http://127.0.0.1:port/metrics, parsed by prometheus_client's parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly these labels (None: absent)."""
    return samples.get((name, frozenset(labels.items())))


def register_scenario_tasks(q: pgq.Queue) -> None:
    """Tasks ``ok`` (queue a), ``boom`` (queue b, one attempt) and ``slow`` (async, times out)."""

    @q.task(name="ok", queue="a")
    def ok(n: int) -> int:
        return n

    @q.task(name="boom", queue="b", max_attempts=1)
    def boom() -> None:
        raise ValueError("boom")

    @q.task(name="slow", queue="b", max_attempts=1, timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(30)


def worker_scenario(q: pgq.Queue, start: Callable[[pgq.Worker], RunningWorker]) -> tuple[Samples, pgq.Worker]:
    """5 ok, 3 boom, 1 slow; run a worker with a metrics port; scrape once all are done.

    Returns the scrape (after checking the counts the scenario implies) and the worker.
    """
    register_scenario_tasks(q)
    q.enqueue_many([{"task": "ok", "payload": {"n": i}} for i in range(5)])
    for _ in range(3):
        q.enqueue("boom")
    q.enqueue("slow")
    port = free_port()
    worker = q.worker(queues=["a", "b"], concurrency=4, metrics_port=port, install_signal_handlers=False)
    running = start(worker)
    ok = {"queue": "a", "task": "ok"}
    boom = {"queue": "b", "task": "boom"}
    slow = {"queue": "b", "task": "slow"}

    def done() -> Samples | None:
        try:
            samples = scrape(port)
        except urllib.error.URLError:
            return None  # run() has not started serving yet
        finished = [value(samples, "pgq_jobs_completed_total", **ok),
                    value(samples, "pgq_jobs_failed_total", **boom, outcome="failed"),
                    value(samples, "pgq_jobs_failed_total", **slow, outcome="timed_out")]
        return samples if finished == [5, 3, 1] else None

    samples = eventually(done, "the scrape to count every outcome", 30)
    assert value(samples, "pgq_jobs_started_total", **ok) == 5
    assert value(samples, "pgq_jobs_started_total", **boom) == 3
    assert value(samples, "pgq_jobs_started_total", **slow) == 1
    assert value(samples, "pgq_job_duration_seconds_count", **ok) == 5
    assert value(samples, "pgq_job_duration_seconds_count", **boom) == 3
    assert value(samples, "pgq_jobs_failed_total", **ok, outcome="failed") is None
    assert value(samples, "pgq_claim_batch_size_sum") == 9  # every job claimed once
    assert value(samples, "pgq_worker_jobs_claimed_total") == 9
    assert value(samples, "pgq_ack_batch_size_sum", kind="complete") == 5
    assert value(samples, "pgq_ack_batch_size_sum", kind="fail") == 4
    assert value(samples, "pgq_jobs_in_flight") == 0
    assert value(samples, "pgq_worker_info", worker_id=str(worker.id)) == 1
    counts = cumulative_buckets(samples, "pgq_job_duration_seconds", ok)
    assert counts == sorted(counts) and counts[-1] == 5  # cumulative, +Inf holds every job
    running.stop()
    return samples, worker


def cumulative_buckets(samples: Samples, histogram: str, labels: dict[str, Any]) -> list[float]:
    """The bucket counts of ``histogram`` for ``labels``, in the order of their bounds (+Inf last)."""
    rows = sorted((float(dict(key)["le"]), v) for (name, key), v in samples.items()
                  if name == f"{histogram}_bucket" and key >= frozenset(labels.items()))
    return [v for _, v in rows]
