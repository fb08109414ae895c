"""The test kit's statements (``pgq.testing``), for one schema, next to the methods that send them.

Reads of the jobs, their parents and the attempts one worker made (for
``enqueued`` and ``run_until_empty``), and the clock's one write: moving
every timestamp stored in the schema back by an interval, the workers' own
excepted (``pgq.testing.clock``). None of these is a stored function on purpose: a
function that rewrites the queue's past has no place in a production database.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from psycopg import sql

from pgq.db import execute, quote_ident
from pgq.job import JOB_COLUMNS, Job, job_from_row
from pgq.queries.base import _JOB_SELECT


class KitQueries:
    """The statements of the test kit, for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self.schema = schema
        self._now = "SELECT now()"
        # Every timestamptz column a table of the schema stores (generated columns are
        # computed; a partition is updated through its parent, never twice), but the
        # workers' own: a worker is a process living in real time, whose heartbeats keep
        # their pace whatever the queue's clock says (aging them would make a live worker stale).
        self._columns = (
            "SELECT c.relname, a.attname FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " JOIN pg_attribute AS a ON a.attrelid = c.oid"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            "   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
            "   AND a.atttypid = 'timestamptz'::regtype AND c.relname NOT IN ('workers', 'worker_health_logs')"
            " ORDER BY c.relname, a.attnum"
        )
        # Wake LISTENing workers of the queues whose jobs the shift made due.
        self._notify_due = (
            f"SELECT {s}.notify_queues(ARRAY(SELECT DISTINCT queue FROM {s}.jobs"
            "  WHERE status IN ('queued', 'retrying') AND run_at <= now()))"
        )
        # A Job's columns (as QueueControl.get reads them), then what the kit adds.
        self._jobs = (
            f"SELECT {_JOB_SELECT}, group_key, extract(epoch FROM run_at - created_at)::float8,"
            f" ARRAY(SELECT d.parent_id FROM {s}.job_dependencies AS d WHERE d.child_id = j.id ORDER BY d.parent_id)"
            f" FROM {s}.jobs AS j ORDER BY j.id LIMIT %s"
        )
        self._attempts = (
            "SELECT e.job_id, j.task, e.attempt, e.outcome::text, e.error_type, e.error_message, e.traceback,"
            " e.duration_ms"
            f" FROM {s}.job_executions AS e JOIN {s}.jobs AS j ON j.id = e.job_id"
            " WHERE e.worker_id = %s::uuid ORDER BY e.finished_at, e.id"
        )
        self._next_tick = (
            f"SELECT min(next_tick), count(*) FROM {s}.schedules"
            " WHERE enabled AND next_tick IS NOT NULL AND (%s::text IS NULL OR name = %s::text)"
        )

    def now(self, conn: Any) -> dt.datetime:
        value: dt.datetime = execute(conn, self._now)[0][0]
        return value

    def shift_back(self, conn: Any, by: dt.timedelta) -> int:
        """Move every timestamp of the schema ``by`` earlier, then wake the queues whose jobs are due
        now; run it in a transaction. Returns the number of rows changed."""
        columns: dict[str, list[str]] = {}
        for table, column in execute(conn, self._columns, [self.schema]):
            columns.setdefault(table, []).append(column)
        changed = 0
        for table, names in columns.items():
            statement = sql.SQL("UPDATE {}.{} SET {}").format(
                sql.Identifier(self.schema), sql.Identifier(table),
                sql.SQL(", ").join(sql.SQL("{0} = {0} - %s::interval").format(sql.Identifier(name)) for name in names))
            changed += conn.execute(statement, [by] * len(names)).rowcount
        execute(conn, self._notify_due)
        return changed

    def jobs(self, conn: Any, limit: int) -> list[tuple[Job, str | None, float, list[int]]]:
        """Every job (at most ``limit``, oldest first) with its group key, delay (seconds from
        enqueue to run_at) and parents' ids."""
        n = len(JOB_COLUMNS)
        return [(job_from_row(row[:n]), row[n], float(row[n + 1]), list(row[n + 2]))
                for row in execute(conn, self._jobs, [limit])]

    def attempts(self, conn: Any, worker_id: UUID) -> list[tuple[Any, ...]]:
        """(job_id, task, attempt, outcome, error_type, error_message, traceback, duration_ms) of each
        attempt ``worker_id`` finished, in the order they finished."""
        return execute(conn, self._attempts, [worker_id])

    def next_tick(self, conn: Any, schedule: str | None) -> tuple[dt.datetime | None, int]:
        """(the earliest next tick, how many enabled schedules have one), of ``schedule`` or of all."""
        row = execute(conn, self._next_tick, [schedule, schedule])[0]
        return row[0], int(row[1])
