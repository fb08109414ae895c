"""Statements of pausing queues and periodic schedules (issue 10; ``pgq.scheduling``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pgq.db import execute, quote_ident


class PauseQueries:
    """The statements of pausing queues (``pgq.scheduling.pause``), for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._pause = f"SELECT {s}.pause_queue(%s::text)"
        self._resume = f"SELECT {s}.resume_queue(%s::text)"
        self._paused = (
            "SELECT queue, paused_at, paused_by, paused_by_application, waiting_jobs"
            f" FROM {s}.paused_queues ORDER BY queue"
        )
        self._resumed_since = f"SELECT EXISTS (SELECT 1 FROM {s}.queue_pauses WHERE resumed_at >= %s::timestamptz)"

    def pause(self, conn: Any, queue: str) -> bool:
        return bool(execute(conn, self._pause, [queue])[0][0])

    def resume(self, conn: Any, queue: str) -> bool:
        return bool(execute(conn, self._resume, [queue])[0][0])

    def paused(self, conn: Any) -> list[tuple[Any, ...]]:
        """(queue, paused_at, paused_by, paused_by_application, waiting_jobs) of each paused queue."""
        return execute(conn, self._paused)

    def resumed_since(self, conn: Any, since: dt.datetime) -> bool:
        """Whether a queue was resumed at or after ``since`` (the Redis reconciler's last horizon)."""
        return bool(execute(conn, self._resumed_since, [since])[0][0])


class ScheduleQueries:
    """The statements of periodic schedules (``pgq.scheduling.cron``), for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._now = "SELECT now()"
        self._register = (f"SELECT {s}.register_schedule(%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s,"
                          " %s::timestamptz, %s::timestamptz)")
        self._due = ("SELECT name, cron, timezone, catch_up, catch_up_limit, misfire_grace_seconds, next_tick"
                     f" FROM {s}.schedules WHERE enabled AND (next_tick IS NULL OR next_tick <= %s::timestamptz)"
                     " ORDER BY next_tick NULLS FIRST, name LIMIT %s")
        self._tick = (f"SELECT {s}.enqueue_schedule_ticks(%s, %s::timestamptz, %s::timestamptz,"
                      " %s::timestamptz[], %s::timestamptz, %s::timestamptz)")
        self._set_next = f"SELECT {s}.set_schedule_next_tick(%s, %s::timestamptz, %s::timestamptz)"
        self._list = ("SELECT name, cron, timezone, task, queue, catch_up, enabled, next_tick, last_tick, last_job_id"
                      f" FROM {s}.schedules ORDER BY name")

    def now(self, conn: Any) -> dt.datetime:
        value: dt.datetime = execute(conn, self._now)[0][0]
        return value

    def register(self, conn: Any, params: Sequence[Any]) -> str:
        """``register_schedule`` with its 13 arguments in order; 'created', 'updated' or 'unchanged'."""
        return str(execute(conn, self._register, params)[0][0])

    def due(self, conn: Any, now: dt.datetime, limit: int) -> list[tuple[Any, ...]]:
        """(name, cron, timezone, catch_up, catch_up_limit, misfire_grace_seconds, next_tick) of enabled
        schedules due at ``now`` or without a next tick."""
        return execute(conn, self._due, [now, limit])

    def enqueue_ticks(self, conn: Any, name: str, due: dt.datetime, latest: dt.datetime,
                      ticks: list[dt.datetime], after: dt.datetime, now: dt.datetime) -> list[int] | None:
        value = execute(conn, self._tick, [name, due, latest, ticks, after, now])[0][0]
        return None if value is None else [int(i) for i in value]

    def set_next(self, conn: Any, name: str, after: dt.datetime, now: dt.datetime) -> bool:
        return bool(execute(conn, self._set_next, [name, after, now])[0][0])

    def list(self, conn: Any) -> list[tuple[Any, ...]]:
        return execute(conn, self._list)


class PolicyQueries:
    """The statements of queue claim rules (``pgq.scheduling.policy``), for one schema."""

    COLUMNS = ("queue, max_running, running, rate_limit, extract(epoch FROM rate_period), tokens, group_max_running,"
               " group_rate_limit, extract(epoch FROM group_rate_period), fair_share, extract(epoch FROM aging_step),"
               " runnable, groups_with_state, updated_at")

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._set = (
            f"SELECT queue FROM {s}.set_queue_policy(%s::text, %s::int, %s::int,"
            " make_interval(secs => %s::float8), %s::int, %s::int, make_interval(secs => %s::float8),"
            " %s::boolean, make_interval(secs => %s::float8))"
        )
        self._clear = f"SELECT {s}.clear_queue_policy(%s::text)"
        self._weight = f"SELECT weight FROM {s}.set_group_weight(%s::text, %s::text, %s::float8)"
        self._usage = f"SELECT {self.COLUMNS} FROM {s}.queue_policy_usage ORDER BY queue"
        self._ruled = f"SELECT queue FROM {s}.queue_policies WHERE queue = ANY (%s::text[])"
        self._age = f"SELECT {s}.age_jobs()"

    def store(self, conn: Any, values: Sequence[Any]) -> None:
        """``set_queue_policy`` with (queue, max_running, rate_limit, rate_period seconds, group_max_running,
        group_rate_limit, group_rate_period seconds, fair_share, aging_step seconds)."""
        execute(conn, self._set, list(values))

    def clear(self, conn: Any, queue: str) -> bool:
        return bool(execute(conn, self._clear, [queue])[0][0])

    def set_weight(self, conn: Any, queue: str, group_key: str, weight: float) -> None:
        execute(conn, self._weight, [queue, group_key, weight])

    def usage(self, conn: Any) -> list[tuple[Any, ...]]:
        """Rows of ``queue_policy_usage`` in ``COLUMNS`` order, by queue."""
        return execute(conn, self._usage)

    def ruled(self, conn: Any, queues: Sequence[str]) -> frozenset[str]:
        """Which of ``queues`` have a policy (claimed from Postgres only, also in Redis mode)."""
        return frozenset(str(r[0]) for r in execute(conn, self._ruled, [list(queues)]))

    def age(self, conn: Any) -> int:
        """``age_jobs()``: the number of jobs raised by aging."""
        return int(execute(conn, self._age)[0][0])
