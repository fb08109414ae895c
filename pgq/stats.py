"""Point-in-time queue statistics: depth per queue x status x priority, the
oldest due job's age, workers and the dead letter queue size.

Read from the views ``queue_stats`` (exact counts of the jobs still to run or
to decide on: waiting, queued, running, retrying, dead; it reads partial
indexes only), ``job_status_estimates`` (completed and cancelled jobs kept for
the retention period, estimated from the table statistics: counting them would
read the whole table) and ``worker_status``; alerting is not this module's
business.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from pgq.queries import Queries


@dataclass(frozen=True)
class DepthRow:
    queue: str
    status: str
    priority: int
    jobs: int
    due: int
    oldest_due_age_seconds: float | None


@dataclass(frozen=True)
class WorkerRow:
    id: UUID
    hostname: str
    pid: int
    status: str
    queues: list[str]
    capacity: int
    current_load: int
    running_jobs: int
    health_score: float
    heartbeat_age_seconds: float
    started_at: dt.datetime
    # Sync handlers running on past their job's timeout (their threads replaced).
    stuck_handlers: int = 0


@dataclass(frozen=True)
class QueueStats:
    depth: list[DepthRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    dead_letters: int = 0
    # Estimated jobs per status (as of the last ANALYZE of jobs), e.g. {"completed": 120000}.
    estimated: dict[str, int] = field(default_factory=dict)

    def count(self, *, queue: str | None = None, status: str | None = None) -> int:
        """Jobs matching ``queue`` and/or ``status``, of the statuses ``depth`` counts
        (waiting, queued, running, retrying, dead; finished jobs: ``estimated``)."""
        return sum(r.jobs for r in self.depth
                   if (queue is None or r.queue == queue) and (status is None or r.status == status))

    def oldest_due_age(self, queue: str | None = None) -> float | None:
        """Seconds the oldest due, unclaimed job has waited (None if none)."""
        ages = [r.oldest_due_age_seconds for r in self.depth
                if r.oldest_due_age_seconds is not None and (queue is None or r.queue == queue)]
        return max(ages) if ages else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for w in data["workers"]:
            w["id"] = str(w["id"])
            w["started_at"] = w["started_at"].isoformat()
        return data


def collect_stats(conn: Any, queries: Queries) -> QueueStats:
    depth = [
        DepthRow(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), None if r[5] is None else float(r[5]))
        for r in queries.queue_stats(conn)
    ]
    workers = [
        WorkerRow(r[0], r[1], int(r[2]), r[3], list(r[4]), int(r[5]), int(r[6]), int(r[7]), float(r[8]),
                  float(r[9]), r[10], int(r[11]))
        for r in queries.workers(conn)
    ]
    return QueueStats(depth, workers, queries.dead_letter_count(conn), queries.status_estimates(conn))
