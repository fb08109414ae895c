"""What the dashboard's pages read: SQLAlchemy Core selects on ``pgq.schema``'s tables.

Every read is composed from the table metadata (and, for the views pgq
already maintains, ``Table``s naming their columns), with
bound parameters; no SQL is built from strings. Each select is shaped to
read an index, never the whole ``jobs`` table: the live statuses through
their partial indexes, the last hour through ``jobs_finished_idx`` and
``jobs_dead_idx``, a job by key, and the job search inside a window of ids
(``SEARCH_WINDOW``) read backwards on the primary key. bench/RESULTS.md has
their plans on a million jobs. Actions are ``pgq.dashboard.actions``'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    MetaData,
    Select,
    Table,
    and_,
    cast,
    desc,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.types import NullType
from sqlalchemy.engine import Connection, Engine

from pgq import schema as s

#: How many ids back from its starting point one job search reads at most
#: (newest first); the page links to the next window.
SEARCH_WINDOW = 100_000
#: Rows on one page of a listing.
PAGE_SIZE = 50
#: The charts' span: the last hour, in one-minute buckets.
CHART_MINUTES = 60

# The views pgq maintains (db/views/), with the columns the pages read: ``Table``s of a
# metadata of their own (not pgq.schema's, which mirrors the tables), so that
# ``schema_translate_map`` points them at the configured schema like the tables.
_views = MetaData(schema=s.SCHEMA)


def _view(name: str, *columns: str) -> Table:
    return Table(name, _views, *(Column(c, NullType()) for c in columns))


queue_stats = _view("queue_stats", "queue", "status", "priority", "jobs", "due", "oldest_due_age")
health_alerts = _view("health_alerts", "rule", "severity", "subject", "value", "threshold", "firing", "detail")
job_blockers = _view("job_blockers", "job_id", "reason", "effective_priority", "waiting_on", "parent_statuses")
paused_queues = _view("paused_queues", "queue", "paused_at", "paused_by", "waiting_jobs")

# Each branch's WHERE is the predicate of the partial index that answers it.
_OPEN_DLQ = s.dead_letter_queue.c.requeued_at.is_(None)
_FINISHED_OK = s.jobs.c.status.in_(["completed", "cancelled"])  # jobs_finished_idx


@dataclass(frozen=True)
class JobFilter:
    """The job search: every field optional; ``before`` pages back (ids below it)."""

    queue: str | None = None
    task: str | None = None
    status: str | None = None
    unique_key: str | None = None
    error: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    before: int | None = None


@dataclass(frozen=True)
class JobPage:
    """One page of the job search: the rows, the id window read, where the next page starts."""

    rows: list[Any]
    window_top: int
    window_bottom: int
    next_before: int | None


def _minutes_ago(column_: ColumnElement[Any]) -> ColumnElement[Any]:
    """Whole minutes between ``column_`` and the database's now (0 = the last minute)."""
    return func.floor(func.extract("epoch", func.now() - column_) / 60)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DashboardReads:
    """The pages' reads for one pgq schema, on a SQLAlchemy engine (psycopg driver)."""

    def __init__(self, engine: Engine, schema: str) -> None:
        self.engine = engine
        self.options = {"schema_translate_map": s.schema_translate_map(schema)}

    def connect(self) -> Connection:
        """A connection for one page: the reads run in one read-only transaction."""
        conn = self.engine.connect().execution_options(**self.options)
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return conn

    # ------------------------------------------------------------ overview
    def now(self, conn: Connection) -> dt.datetime:
        value: dt.datetime = conn.execute(select(func.now())).scalar_one()
        return value

    def depth(self, conn: Connection) -> list[Any]:
        """Jobs per queue x status x priority still to run or decide on (``queue_stats``)."""
        q = queue_stats.c
        stmt = select(q.queue, q.status, q.priority, q.jobs, q.due,
                      func.extract("epoch", q.oldest_due_age).label("oldest_due_seconds")
                      ).order_by(q.queue, q.status, desc(q.priority))
        return list(conn.execute(stmt))

    def dead_letters_per_queue(self, conn: Connection) -> dict[str, int]:
        d = s.dead_letter_queue.c
        stmt = select(d.queue, func.count()).where(_OPEN_DLQ).group_by(d.queue)
        return {str(r[0]): int(r[1]) for r in conn.execute(stmt)}

    def throughput(self, conn: Connection) -> list[Any]:
        """Per queue and minute of the last hour: jobs completed, jobs dead, mean pickup latency (s).

        Pickup latency is claim time minus due time (``started_at - run_at``) of the
        jobs that completed in that minute.
        """
        j = s.jobs.c
        since = func.now() - func.make_interval(0, 0, 0, 0, 0, CHART_MINUTES)
        minute = _minutes_ago(j.finished_at).label("minute")
        pickup = func.extract("epoch", j.started_at - j.run_at)
        done = (select(j.queue, minute, literal("completed").label("kind"), cast(pickup, Float).label("pickup"))
                .where(_FINISHED_OK, j.status == "completed", j.finished_at >= since))
        dead = (select(j.queue, minute, literal("dead").label("kind"), cast(None, Float).label("pickup"))
                .where(j.status == "dead", j.finished_at >= since))
        both = union_all(done, dead).subquery("finished")
        f = both.c
        stmt = (select(f.queue, f.minute,
                       func.count().filter(f.kind == "completed").label("completed"),
                       func.count().filter(f.kind == "dead").label("dead"),
                       func.avg(f.pickup).label("pickup_seconds"))
                .group_by(f.queue, f.minute).order_by(f.queue, f.minute))
        return list(conn.execute(stmt))

    def alerts(self, conn: Connection) -> list[Any]:
        """The alert rules firing now (``health_alerts``)."""
        a = health_alerts.c
        return list(conn.execute(select(a.rule, a.severity, a.subject, a.value, a.threshold, a.detail)
                                 .where(a.firing).order_by(a.severity, a.rule)))

    # ------------------------------------------------------------ jobs
    def search_jobs(self, conn: Connection, flt: JobFilter) -> JobPage:
        """Newest first, ``PAGE_SIZE`` rows, read within ``SEARCH_WINDOW`` ids below ``flt.before``."""
        j = s.jobs.c
        top = flt.before if flt.before is not None else int(conn.execute(select(func.max(j.id))).scalar() or 0) + 1
        bottom = max(top - SEARCH_WINDOW, 0)
        where: list[ColumnElement[bool]] = [j.id < top, j.id >= bottom]
        if flt.queue:
            where.append(j.queue == flt.queue)
        if flt.task:
            where.append(j.task == flt.task)
        if flt.status:
            where.append(j.status == flt.status)
        if flt.unique_key:
            where.append(j.unique_key == flt.unique_key)
        if flt.error:
            where.append(j.last_error.ilike(f"%{_escape_like(flt.error)}%", escape="\\"))
        if flt.created_from:
            where.append(j.created_at >= flt.created_from)
        if flt.created_to:
            where.append(j.created_at < flt.created_to)
        stmt = (select(j.id, j.queue, j.task, j.status, j.priority, j.attempts, j.max_attempts, j.run_at,
                       j.created_at, j.finished_at, j.unique_key, func.left(j.last_error, 160).label("last_error"))
                .where(and_(*where)).order_by(desc(j.id)).limit(PAGE_SIZE))
        rows = list(conn.execute(stmt))
        if len(rows) == PAGE_SIZE:
            next_before: int | None = int(rows[-1].id)
        else:
            next_before = bottom if bottom > 0 else None
        return JobPage(rows, top - 1, bottom, next_before)

    def job(self, conn: Connection, job_id: int) -> Any:
        return conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).first()

    def executions(self, conn: Connection, job_id: int) -> list[Any]:
        e = s.job_executions.c
        return list(conn.execute(select(s.job_executions).where(e.job_id == job_id)
                                 .order_by(e.life, e.attempt, e.id)))

    def dead_letter(self, conn: Connection, job_id: int) -> Any:
        d = s.dead_letter_queue.c
        return conn.execute(select(s.dead_letter_queue).where(d.job_id == job_id, _OPEN_DLQ)).first()

    def relatives(self, conn: Connection, job_id: int) -> tuple[list[Any], list[Any]]:
        """The job's parents and children: id, task, status."""
        j, dep = s.jobs.c, s.job_dependencies.c
        parents = (select(j.id, j.task, j.status).join_from(s.job_dependencies, s.jobs, j.id == dep.parent_id)
                   .where(dep.child_id == job_id).order_by(j.id))
        children = (select(j.id, j.task, j.status).join_from(s.job_dependencies, s.jobs, j.id == dep.child_id)
                    .where(dep.parent_id == job_id).order_by(j.id).limit(200))
        return list(conn.execute(parents)), list(conn.execute(children))

    def blocker(self, conn: Connection, job_id: int) -> Any:
        b = job_blockers.c
        return conn.execute(select(b.reason, b.effective_priority, b.waiting_on, b.parent_statuses)
                            .where(b.job_id == job_id)).first()

    # ------------------------------------------------------------ workers
    def workers(self, conn: Connection) -> list[Any]:
        """Live workers, and those that stopped or went stale in the last hour."""
        w = s.workers.c
        recent = func.now() - func.make_interval(0, 0, 0, 0, 1)
        stmt = (select(w.id, w.hostname, w.pid, w.status, w.queues, w.capacity, w.current_load, w.health_score,
                       func.extract("epoch", func.now() - w.last_heartbeat).label("heartbeat_age"),
                       w.started_at, w.stuck_handlers, w.drain_requested_at, w.evacuation_reason)
                .where(or_(w.status.in_(["active", "draining"]), w.last_heartbeat >= recent))
                .order_by(w.status, w.started_at).limit(500))
        return list(conn.execute(stmt))

    def health_series(self, conn: Connection, worker_ids: Sequence[UUID]) -> dict[UUID, list[tuple[float, float]]]:
        """Each worker's health score over the last hour: (minutes ago, score), oldest first."""
        h = s.worker_health_logs.c
        since = func.now() - func.make_interval(0, 0, 0, 0, 0, CHART_MINUTES)
        stmt = (select(h.worker_id, (func.extract("epoch", func.now() - h.logged_at) / 60).label("ago"),
                       h.health_score)
                .where(h.worker_id.in_(list(worker_ids)), h.metric_type == "heartbeat", h.logged_at >= since,
                       h.health_score.is_not(None))
                .order_by(h.worker_id, h.logged_at))
        series: dict[UUID, list[tuple[float, float]]] = {}
        for row in conn.execute(stmt) if worker_ids else []:
            series.setdefault(row.worker_id, []).append((float(row.ago), float(row.health_score)))
        return series

    # ------------------------------------------------------------ dead letter queue
    def dead_letters(self, conn: Connection, queue: str | None) -> list[Any]:
        """The newest open dead letters (``PAGE_SIZE`` * 2), of ``queue`` if given."""
        d, j = s.dead_letter_queue.c, s.jobs.c
        stmt = (select(d.job_id, d.queue, d.task, d.reason, func.left(d.last_error, 200).label("last_error"),
                       d.moved_at, j.attempts)
                .join_from(s.dead_letter_queue, s.jobs, j.id == d.job_id)
                .where(_OPEN_DLQ).order_by(desc(d.moved_at), desc(d.id)).limit(PAGE_SIZE * 2))
        if queue:
            stmt = stmt.where(d.queue == queue)
        return list(conn.execute(stmt))

    # ------------------------------------------------------------ schedules, snapshots, pauses
    def schedules(self, conn: Connection) -> list[Any]:
        c = s.schedules.c
        return list(conn.execute(select(c.name, c.cron, c.timezone, c.task, c.queue, c.enabled, c.next_tick,
                                        c.last_tick, c.last_job_id).order_by(c.name)))

    def snapshots(self, conn: Connection) -> list[Any]:
        c = s.state_snapshots.c
        stmt: Select[Any] = (select(c.id, c.snapshot_type, c.origin, c.created_at, c.schema_revision, c.metadata)
                             .order_by(desc(c.created_at)).limit(PAGE_SIZE))
        return list(conn.execute(stmt))

    def paused(self, conn: Connection) -> list[Any]:
        p = paused_queues.c
        return list(conn.execute(select(p.queue, p.paused_at, p.paused_by, p.waiting_jobs).order_by(p.queue)))
