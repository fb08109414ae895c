"""The worker's Prometheus exporter with the Redis accelerator (issue 11, item 7).

The same scenario as the Postgres-only test (``metrics_support``): jobs
delivered through Redis (the safety-net poll is long), counted by the worker,
scraped over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import pgq
from factories import RunningWorker
from metrics_support import value, worker_scenario

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def q(rsettings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=rsettings)
    yield queue
    queue.close()


def test_scrape_counts_what_a_redis_worker_did(q: pgq.Queue, running: Callable[..., RunningWorker]) -> None:
    samples, worker = worker_scenario(q, running)
    # Delivered through Redis, and the claim source's counts are published as they were counted.
    claimed = value(samples, "pgq_worker_events_total", event="redis_claimed")
    assert claimed is not None and claimed >= 1
    assert claimed == worker.counters.extra["redis_claimed"]
