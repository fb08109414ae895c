"""What one worker did, as plain counters (logged at shutdown, read by tests and the bench).

The worker's parts each add to their own fields; nothing here decides anything.
``metrics`` carries the measurements of the heartbeat's health samples
(``pgq.worker.metrics``), and ``exporter`` the Prometheus exporter's when it
is on (``pgq.health.worker_exporter``), so every part that counts can also measure.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pgq.worker.metrics import WorkerMetrics

if TYPE_CHECKING:
    from pgq.job import Job


class JobRecorder(Protocol):
    """What the worker's parts tell an exporter (``pgq.health.worker_exporter.WorkerExporter``)."""

    def started(self, job: Job) -> None: ...

    def ran(self, job: Job, seconds: float) -> None: ...

    def completed(self, jobs: Iterable[Job]) -> None: ...

    def failed(self, job: Job, outcome: str) -> None: ...

    def claimed(self, jobs: int, seconds: float) -> None: ...

    def acknowledged(self, kind: str, outcomes: int, seconds: float) -> None: ...


#: How many of the latest failed jobs ``WorkerCounters.failed_jobs`` keeps.
FAILED_JOBS_KEPT = 32


class RecentIds:
    """The latest ids added (at most ``keep``), added by one thread and read by another."""

    def __init__(self, keep: int) -> None:
        self._ids: deque[int] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, job_id: int) -> None:
        with self._lock:
            self._ids.append(job_id)

    def read(self) -> list[int]:
        """A copy (iterating the deque itself while the other thread appends would raise)."""
        with self._lock:
            return list(self._ids)


@dataclass
class WorkerCounters:
    """Counts since the worker started. ``extra`` holds the claim source's own counts
    (for example ``redis_claimed`` in Redis mode)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    stale_reports: int = 0
    released: int = 0
    claim_round_trips: int = 0
    ack_round_trips: int = 0
    errors: int = 0
    #: The latest jobs whose failure this worker wrote (an evacuation asks whether they failed elsewhere too).
    failed_jobs: RecentIds = field(default_factory=lambda: RecentIds(FAILED_JOBS_KEPT), repr=False, compare=False)
    extra: dict[str, int] = field(default_factory=dict)
    # Health measurements for the heartbeat's samples (issue 11); switched by PGQ_HEALTH_SAMPLING.
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics, repr=False, compare=False)
    # The Prometheus exporter (PGQ_METRICS_PORT); None when off: the parts then record nothing for it.
    exporter: JobRecorder | None = field(default=None, repr=False, compare=False)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the extra counter ``name``."""
        self.extra[name] = self.extra.get(name, 0) + n
