"""Every statement of the health feature, as one small typed function each.

Built once per schema like ``pgq.queries.Queries`` (the schema quoted by
psycopg, bound parameters only): the heartbeat with its sample, pruning old
samples. Deciding what to do with the answers is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from pgq.db import execute, quote_ident
from pgq.health import METRICS
from pgq.queries import Heartbeat


class HealthQueries:
    """The health statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = quote_ident(schema)
        self._heartbeat_v3 = (
            f"SELECT status, previous_status, lost_job_ids, rescued_job_ids"
            f" FROM {s}.heartbeat_worker_v3(%s::uuid, %s::int, %s::bigint[], %s::bigint, %s::jsonb)"
        )
        # One batch of pruning by the maintenance leader only: the lock is taken
        # again for this transaction (NULL when another worker leads meanwhile).
        self._prune_if_leader = (
            f"SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext(%s))"
            f" THEN {s}.prune_health_logs(make_interval(secs => %s::float8), %s::int) END"
        )
        # What `pgq metrics` publishes, in one read (revision 0014).
        self._collect = f"SELECT metric, queue, status, priority, worker_id, value FROM {s}.collect_metrics()"
        self._alerts = (
            f"SELECT rule, severity, subject, value, threshold, firing, detail FROM {s}.health_alerts"
            " ORDER BY firing DESC, severity = 'critical' DESC, rule, subject"
        )
        # The samples of the live workers over the last window, per worker in time
        # order, for the analysis (a BRIN range on logged_at; the join reads the
        # small workers table).
        self._recent = (
            "SELECT l.worker_id, w.queues, extract(epoch FROM now() - l.logged_at)::float8, "
            + ", ".join(f"l.{m}" for m in METRICS)
            + f" FROM {s}.worker_health_logs AS l JOIN {s}.workers AS w ON w.id = l.worker_id"
            " WHERE l.metric_type = 'heartbeat' AND l.logged_at > now() - make_interval(secs => %s::float8)"
            " AND w.status IN ('active', 'draining')"
            " ORDER BY l.worker_id, l.logged_at, l.id"
        )

    def collect_metrics(self, conn: Any) -> list[tuple[Any, ...]]:
        """Rows ``(metric, queue, status, priority, worker_id, value)`` of ``collect_metrics()`` (read-only)."""
        return execute(conn, self._collect)

    def heartbeat_worker_v3(
        self, conn: Any, worker_id: UUID, load: int, running: Sequence[int], started_through: int | None,
        sample: Mapping[str, float | int] | None,
    ) -> Heartbeat:
        """Send a heartbeat with a health sample (``heartbeat_worker_v3``, commits).

        Args:
            running, started_through: as ``Queries.heartbeat_worker_v2``.
            sample: the sample's metrics (``worker_health_logs``' sample columns), or
                None for no sample.

        Returns:
            A ``Heartbeat`` with every field set.

        Raises:
            InvalidTransition: the worker is stopped or unknown.
            ValidationError: a bad sample (unknown key, out of range) or watermark;
                nothing was recorded.
        """
        payload = None if sample is None else json.dumps(dict(sample), allow_nan=False)
        row = execute(conn, self._heartbeat_v3, [worker_id, load, list(running), started_through, payload])[0]
        return Heartbeat(str(row[1]), [int(i) for i in row[2]], str(row[0]), [int(i) for i in row[3]])

    def alerts(self, conn: Any) -> list[tuple[Any, ...]]:
        """Rows ``(rule, severity, subject, value, threshold, firing, detail)`` of ``health_alerts``."""
        return execute(conn, self._alerts)

    def recent_samples(self, conn: Any, window_seconds: float) -> list[tuple[Any, ...]]:
        """Rows ``(worker_id, queues, age_seconds, *METRICS)`` of the live workers' samples
        logged within ``window_seconds``, by worker then time (``SampleSet.from_rows``)."""
        return execute(conn, self._recent, [window_seconds])

    def prune_health_logs_if_leader(self, conn: Any, older_than_seconds: float, limit: int) -> int | None:
        """Delete up to ``limit`` samples older than that, if this transaction holds the
        maintenance lead (None when another worker leads now)."""
        row = execute(conn, self._prune_if_leader, [f"pgq-maintenance:{self.schema}", older_than_seconds, limit])[0]
        return None if row[0] is None else int(row[0])
