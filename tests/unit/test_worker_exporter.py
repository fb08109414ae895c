"""The worker exporter's recording and collection, without a worker or a network (issue 11, item 7).

Counts from many threads at once are exact (each thread writes its own
shard), histogram buckets are cumulative with the right bounds, and the
exposition text parses with prometheus_client's own parser.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgq.health.worker_exporter import WorkerExporter
from pgq.job import Job, JobStatus
from pgq.worker.counters import WorkerCounters


def job(queue: str, task: str) -> Job:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return Job(1, queue, task, {}, 3, JobStatus.RUNNING, at, 1, 3, None, None, None, at, None, None, None, at, at)


def samples(exporter: WorkerExporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counts_from_many_threads_at_once_are_exact() -> None:
    exporter = WorkerExporter(uuid.uuid4(), WorkerCounters(), lambda: 0)
    a, b = job("q", "a"), job("q", "b")
    go = threading.Event()

    def record(n: int) -> None:
        go.wait()
        for _ in range(n):
            exporter.started(a)
            exporter.ran(b, 0.002)
        exporter.completed([a] * n)

    threads = [threading.Thread(target=record, args=(5000,)) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    found = samples(exporter)
    assert found[("pgq_jobs_started_total", frozenset({("queue", "q"), ("task", "a")}))] == 40000
    assert found[("pgq_jobs_completed_total", frozenset({("queue", "q"), ("task", "a")}))] == 40000
    assert found[("pgq_job_duration_seconds_count", frozenset({("queue", "q"), ("task", "b")}))] == 40000


def test_histogram_buckets_are_cumulative_at_their_bounds() -> None:
    exporter = WorkerExporter(uuid.uuid4(), WorkerCounters(), lambda: 3)
    j = job("q", "t")
    for seconds in (0.0005, 0.001, 0.003, 0.2, 7200.0):  # 0.001 falls in the le="0.001" bucket
        exporter.ran(j, seconds)
    exporter.claimed(0, 0.01)
    exporter.claimed(100, 0.02)
    found = samples(exporter)
    labels = {("queue", "q"), ("task", "t")}

    def bucket(le: str) -> float:
        return found[("pgq_job_duration_seconds_bucket", frozenset(labels | {("le", le)}))]

    assert [bucket("0.001"), bucket("0.0025"), bucket("0.005"), bucket("0.25"), bucket("3600.0"), bucket("+Inf")] == \
        [2, 2, 3, 4, 4, 5]
    assert found[("pgq_job_duration_seconds_sum", frozenset(labels))] == 0.0005 + 0.001 + 0.003 + 0.2 + 7200.0
    assert found[("pgq_claim_batch_size_bucket", frozenset({("le", "0.0")}))] == 1
    assert found[("pgq_claim_batch_size_sum", frozenset())] == 100
    assert found[("pgq_jobs_in_flight", frozenset())] == 3


def test_the_worker_counters_are_published_as_they_are() -> None:
    counters = WorkerCounters(claimed=7, released=2, stale_reports=1, errors=4)
    counters.count("redis_claimed", 5)
    counters.metrics.score = 0.5
    worker_id = uuid.uuid4()
    found = samples(WorkerExporter(worker_id, counters, lambda: 0))
    assert found[("pgq_worker_jobs_claimed_total", frozenset())] == 7
    assert found[("pgq_worker_jobs_released_total", frozenset())] == 2
    assert found[("pgq_worker_stale_outcomes_total", frozenset())] == 1
    assert found[("pgq_worker_errors_total", frozenset())] == 4
    assert found[("pgq_worker_events_total", frozenset({("event", "redis_claimed")}))] == 5
    assert found[("pgq_worker_health_score", frozenset({("worker_id", str(worker_id))}))] == 0.5
