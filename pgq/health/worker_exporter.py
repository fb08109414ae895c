"""A worker's Prometheus metrics: what it records on the job path, and its ``/metrics`` endpoint.

``WorkerExporter`` is given to the worker's parts (through ``WorkerCounters``)
only when ``Settings.metrics_port`` is set; they then record into plain dicts
of their thread's own, with no lock (a fraction of a microsecond a job,
``pgq bench metrics``), and pay nothing when it is off. On each scrape its collector
turns what was recorded, the worker's counters and its state now (jobs in
flight, the latest health score) into metric families, in a registry of its
own (never prometheus_client's global one), served over HTTP by
``prometheus_client``. The metrics are listed in docs/metrics.md.
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pgq.errors import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from pgq.job import Job

#: Handler run times (seconds): from a no-op job to a long batch job.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0)
#: Round trips to the database (seconds).
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Jobs per claim, outcomes per write.
BATCH_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

#: WorkerCounters fields published as counters: (field, metric name without _total, help).
_COUNTER_FIELDS = (
    ("claimed", "pgq_worker_jobs_claimed", "Jobs this worker claimed."),
    ("released", "pgq_worker_jobs_released", "Claimed jobs given back unstarted (at shutdown)."),
    ("stale_reports", "pgq_worker_stale_outcomes",
     "Outcomes the database refused as stale (the job was rescued, cancelled or timed out meanwhile)."),
    ("claim_round_trips", "pgq_worker_claim_round_trips", "Claim statements sent."),
    ("ack_round_trips", "pgq_worker_ack_round_trips", "Outcome statements sent (completions in batches, failures one by one)."),
    ("errors", "pgq_worker_errors", "Errors the worker survived (failed claims, writes, heartbeats)."),
)


def missing_extra(extra: str, what: str) -> ConfigurationError:
    """The error for an optional dependency that is not installed."""
    return ConfigurationError(f"{what} needs the {extra} extra: pip install 'pgq[{extra}]'")


class _Histogram:
    """Bucket counts per label tuple (not cumulative: the collector adds them up)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], list[float]] = {}  # labels -> [count per bucket..., +Inf, sum]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def add(self, other: _Histogram) -> None:
        """Add ``other``'s counts (another thread's: each row is copied in one step)."""
        for labels, row in list(other.series.items()):
            mine = self.series.setdefault(labels, [0.0] * (len(self.bounds) + 2))
            for i, count in enumerate(list(row)):
                mine[i] += count

    def family(self, name: str, documentation: str, label_names: Sequence[str]) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(name, documentation, labels=list(label_names))
        for labels, row in sorted(self.series.items()):
            running = 0.0
            buckets = []
            for bound, count in zip((*map(_bound, self.bounds), "+Inf"), row[:-1], strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric(list(labels), buckets, row[-1])
        return family


def _bound(value: float) -> str:
    return repr(float(value))


def _add_counts(total: dict[Any, int], part: dict[Any, int]) -> None:
    for key, count in list(part.items()):
        total[key] = total.get(key, 0) + count


class _Shard:
    """What one thread recorded: written by that thread only, so it needs no lock."""

    def __init__(self) -> None:
        self.started: dict[tuple[str, str], int] = {}
        self.completed: dict[tuple[str, str], int] = {}
        self.failed: dict[tuple[str, str, str], int] = {}
        self.durations = _Histogram(DURATION_BUCKETS)
        self.claim_seconds = _Histogram(ROUND_TRIP_BUCKETS)
        self.claim_sizes = _Histogram(BATCH_BUCKETS)
        self.ack_seconds = _Histogram(ROUND_TRIP_BUCKETS)
        self.ack_sizes = _Histogram(BATCH_BUCKETS)

    def add(self, other: _Shard) -> None:
        """Add ``other``'s counts into this one (the scrape's sum over the threads)."""
        _add_counts(self.started, other.started)
        _add_counts(self.completed, other.completed)
        _add_counts(self.failed, other.failed)
        for mine, theirs in ((self.durations, other.durations), (self.claim_seconds, other.claim_seconds),
                             (self.claim_sizes, other.claim_sizes), (self.ack_seconds, other.ack_seconds),
                             (self.ack_sizes, other.ack_sizes)):
            mine.add(theirs)


class WorkerExporter:
    """One worker's metrics (see the module docstring).

    Each thread that records (runner threads, the event loop's, claimers, the
    acknowledger) writes into a ``_Shard`` of its own, with no lock: every
    counter has a single writer, so no update is lost, and a scrape adds the
    shards up. (A scrape racing a recording may see a histogram's count one
    observation ahead of its sum.)

    Args:
        worker_id: published as the ``worker_id`` label of ``pgq_worker_info``
            and ``pgq_worker_health_score``.
        counters: the worker's ``WorkerCounters`` (read at scrape time, never written here;
            typed loosely: pgq.health never imports pgq.worker, which imports it).
        in_flight: returns the jobs the worker holds now (called at scrape time).
    """

    def __init__(self, worker_id: uuid.UUID, counters: Any, in_flight: Callable[[], int]) -> None:
        self.worker_id = worker_id
        self.counters = counters
        self._in_flight = in_flight
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._shards_lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _shard(self) -> _Shard:
        """The calling thread's shard (made and listed at its first recording)."""
        try:
            return self._local.shard  # type: ignore[no-any-return]
        except AttributeError:
            shard = self._local.shard = _Shard()
            with self._shards_lock:
                self._shards.append(shard)
            return shard

    # ------------------------------------------------------------ the job path
    def started(self, job: Job) -> None:
        """A handler started (its job left the buffer)."""
        counts = self._shard().started
        key = (job.queue, job.task)
        counts[key] = counts.get(key, 0) + 1

    def ran(self, job: Job, seconds: float) -> None:
        """A handler returned after ``seconds``."""
        self._shard().durations.observe((job.queue, job.task), seconds)

    def completed(self, jobs: Iterable[Job]) -> None:
        """These jobs' completions were committed."""
        counts = self._shard().completed
        for job in jobs:
            key = (job.queue, job.task)
            counts[key] = counts.get(key, 0) + 1

    def failed(self, job: Job, outcome: str) -> None:
        """A failure was committed (``outcome``: failed or timed_out)."""
        counts = self._shard().failed
        key = (job.queue, job.task, outcome)
        counts[key] = counts.get(key, 0) + 1

    def claimed(self, jobs: int, seconds: float) -> None:
        """A claim returned ``jobs`` jobs after ``seconds``."""
        shard = self._shard()
        shard.claim_seconds.observe((), seconds)
        shard.claim_sizes.observe((), float(jobs))

    def acknowledged(self, kind: str, outcomes: int, seconds: float) -> None:
        """An outcome statement (``kind``: complete or fail) wrote ``outcomes`` after ``seconds``."""
        shard = self._shard()
        shard.ack_seconds.observe((kind,), seconds)
        shard.ack_sizes.observe((kind,), float(outcomes))

    # ------------------------------------------------------------ the scrape
    def collect(self) -> Iterator[Any]:
        """The metric families (prometheus_client's collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        total = _Shard()
        with self._shards_lock:
            shards = list(self._shards)
        for shard in shards:
            total.add(shard)
        for name, documentation, values, labels in (
            ("pgq_jobs_started", "Handlers started, by queue and task.", total.started, ("queue", "task")),
            ("pgq_jobs_completed", "Completions committed, by queue and task.", total.completed, ("queue", "task")),
            ("pgq_jobs_failed", "Failures committed, by queue, task and outcome (failed, timed_out).", total.failed,
             ("queue", "task", "outcome")),
        ):
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            for key, value in sorted(values.items()):
                family.add_metric(list(key), value)
            yield family
        yield total.durations.family("pgq_job_duration_seconds", "Handler run time, by queue and task.", ("queue", "task"))
        yield total.claim_seconds.family("pgq_claim_duration_seconds", "Claim round trip (Redis pop and Postgres claim).", ())
        yield total.claim_sizes.family("pgq_claim_batch_size", "Jobs returned per claim.", ())
        yield total.ack_seconds.family("pgq_ack_duration_seconds",
                                       "Outcome write round trip, by kind (complete, fail).", ("kind",))
        yield total.ack_sizes.family("pgq_ack_batch_size", "Outcomes written per statement, by kind.", ("kind",))
        yield from self._state(GaugeMetricFamily, CounterMetricFamily)

    def _state(self, gauge: Any, counter: Any) -> Iterator[Any]:
        """The worker's counters and its state now."""
        counters = self.counters
        for field, name, documentation in _COUNTER_FIELDS:
            yield counter(name, documentation, value=getattr(counters, field))
        events = counter("pgq_worker_events", "The claim source's own counts, by event (redis_claimed, redis_pops, "
                         "redis_unavailable, claimed_again, ...).", labels=["event"])
        for event, count in sorted(dict(counters.extra).items()):
            events.add_metric([event], count)
        yield events
        yield gauge("pgq_jobs_in_flight", "Jobs this worker holds: buffered or running.", value=self._in_flight())
        info = gauge("pgq_worker_info", "This worker (always 1).", labels=["worker_id"])
        info.add_metric([str(self.worker_id)], 1)
        yield info
        score = counters.metrics.score
        health = gauge("pgq_worker_health_score", "The worker's health score at its latest heartbeat, 0 (failing) to 1.",
                       labels=["worker_id"])
        if score is not None:
            health.add_metric([str(self.worker_id)], score)
        yield health

    # ------------------------------------------------------------ the endpoint
    def serve(self, port: int, address: str) -> int:
        """Serve ``/metrics`` on ``address:port`` from a daemon thread; return the port.

        Raises:
            ConfigurationError: prometheus-client is missing, or the port cannot be bound.
        """
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise missing_extra("prometheus", "PGQ_METRICS_PORT (--metrics-port)") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._server, self._thread = bind(start_http_server, port, address, registry,
                                          "PGQ_METRICS_PORT, --metrics-port")
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving (the recorded values stay)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def bind(start_http_server: Any, port: int, address: str, registry: CollectorRegistry,
         option: str) -> tuple[Any, Any]:
    """``prometheus_client.start_http_server``; a port that cannot be bound is a ConfigurationError
    naming ``option`` (where the port came from)."""
    try:
        return start_http_server(port, addr=address, registry=registry)  # type: ignore[no-any-return]
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {address}:{port} ({option}): {exc.strerror or exc}") from None
