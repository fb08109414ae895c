"""The queue-level Prometheus exporter (``pgq metrics``): what Postgres says about the queues.

``QueueCollector`` reads ``collect_metrics()`` (one statement, partial
indexes only) on a connection of its own at each scrape and turns the rows
into metric families: depth by queue x status x priority, the oldest due
job's age, open dead letters, workers by status and their health scores. A
scrape during a database outage answers ``pgq_up 0`` (and logs why) instead
of failing, so the outage itself is what Prometheus sees. The metrics are
listed in docs/metrics.md; the worker's own are ``worker_exporter``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pgq.db import connect, translated
from pgq.health.queries import HealthQueries
from pgq.health.worker_exporter import bind, missing_extra
from pgq.settings import Settings

log = logging.getLogger("pgq.metrics")

#: Longest a scrape waits for a connection (seconds): Prometheus' own timeout is 10 s by default.
CONNECT_TIMEOUT_SECONDS = 3

# metric (collect_metrics' name) -> (family name, help, labels taken from the row)
_FAMILIES = {
    "jobs": ("pgq_queue_jobs", "Jobs still to run or to decide on, by queue, status and priority.",
             ("queue", "status", "priority")),
    "oldest_due_age": ("pgq_queue_oldest_due_age_seconds",
                       "How long the oldest due queued or retrying job of the queue has waited to be claimed.",
                       ("queue",)),
    "dead_letters": ("pgq_queue_dead_letters", "Open dead letters (not requeued), by queue.", ("queue",)),
    "workers": ("pgq_workers", "Workers by status (active, draining, stale, stopped).", ("status",)),
    "worker_health": ("pgq_worker_health_score",
                      "Health score of each active or draining worker at its latest heartbeat, 0 (failing) to 1.",
                      ("worker_id",)),
}
_COLUMNS = {"queue": 1, "status": 2, "priority": 3, "worker_id": 4}


class QueueCollector:
    """Reads the queue metrics from Postgres at each scrape (prometheus_client's collector protocol)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.require_database_url()
        self.queries = HealthQueries(settings.schema)

    def read(self) -> list[tuple[Any, ...]]:
        """The rows of ``collect_metrics()``, on a fresh connection (raises what the database raises)."""
        timeout_ms = int(self.settings.statement_timeout_seconds * 1000)
        with translated(self.url), connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                           options=f"-c statement_timeout={timeout_ms}") as conn:
            return self.queries.collect_metrics(conn)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        began = time.perf_counter()
        try:
            rows = self.read()
        except Exception as exc:  # an outage is a value (pgq_up 0), never a failed scrape
            log.warning("pgq metrics: cannot read the queue metrics: %s", exc)
            rows = None
        yield GaugeMetricFamily("pgq_up", "1 when the last scrape read Postgres, 0 when it could not.",
                                value=0 if rows is None else 1)
        if rows is not None:
            yield from self._families(rows, GaugeMetricFamily)
        yield GaugeMetricFamily("pgq_scrape_duration_seconds", "How long this scrape took to read Postgres.",
                                value=time.perf_counter() - began)

    def _families(self, rows: list[tuple[Any, ...]], gauge: Any) -> Iterator[Any]:
        families = {metric: gauge(name, documentation, labels=list(labels))
                    for metric, (name, documentation, labels) in _FAMILIES.items()}
        for row in rows:
            metric = row[0]
            family = families.get(metric)
            if family is None:
                continue  # a newer database's metric this pgq does not know
            labels = [str(row[_COLUMNS[label]]) for label in _FAMILIES[metric][2]]
            family.add_metric(labels, float(row[5]))
        yield from families.values()


def _registry(settings: Settings) -> Any:
    """A registry of its own holding a ``QueueCollector`` (ConfigurationError without prometheus-client)."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise missing_extra("prometheus", "pgq metrics") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(settings))
    return registry


def serve_queue_metrics(settings: Settings, port: int, address: str) -> Any:
    """Serve the queue metrics on ``address:port`` from a daemon thread; return the HTTP server.

    Raises:
        ConfigurationError: prometheus-client is missing, no database is configured,
            or the port cannot be bound.
    """
    registry = _registry(settings)
    from prometheus_client import start_http_server

    server, _thread = bind(start_http_server, port, address, registry, "pgq metrics --port")
    return server


def scrape_once(settings: Settings) -> str:
    """One scrape in the Prometheus text format (``pgq metrics --once``)."""
    registry = _registry(settings)
    from prometheus_client import generate_latest

    return str(generate_latest(registry).decode())
