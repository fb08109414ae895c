"""Postgres-side cost of a measured phase: commits, WAL bytes and dead tuples.

``CostMeter.start()`` before the phase, ``stop(jobs)`` after it (once the
phase's connections are closed, see ``common.settle``) gives the deltas per
1,000 jobs:

- ``commits``: ``pg_stat_database.xact_commit`` of the bench database; every
  committed transaction counts, read-only ones too (an empty claim is one);
  other sessions on the same database add to it;
- ``wal_bytes``: ``pg_wal_lsn_diff`` of ``pg_current_wal_insert_lsn()`` (WAL
  inserted, server-wide: other databases' writes add to it);
- ``dead_tuples``: ``n_dead_tup`` summed over the given tables; autovacuum
  lowers it, so the autovacuum runs during the phase are reported too;
- ``rows_inserted/updated/hot_updated/deleted``: ``n_tup_*`` of the same
  tables (a non-HOT update also writes every index).

Each read calls ``pg_stat_force_next_flush()`` (PostgreSQL 15+) first so that
this session's own counters are current; the bench's own statements between
the two reads (on its one connection, counted) are taken out of ``commits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .common import Env, settle

_SNAPSHOT = """
SELECT d.xact_commit, pg_current_wal_insert_lsn()::text,
       coalesce(sum(t.n_dead_tup), 0), coalesce(sum(t.n_tup_ins), 0), coalesce(sum(t.n_tup_upd), 0),
       coalesce(sum(t.n_tup_hot_upd), 0), coalesce(sum(t.n_tup_del), 0), coalesce(sum(t.autovacuum_count), 0)
FROM pg_stat_database AS d
LEFT JOIN pg_stat_user_tables AS t ON t.schemaname = %s AND t.relname = ANY(%s)
WHERE d.datname = current_database()
GROUP BY d.xact_commit
"""
_FIELDS = ("commits", "wal_lsn", "dead_tuples", "rows_inserted", "rows_updated", "rows_hot_updated",
           "rows_deleted", "autovacuum_runs")


@dataclass
class CostMeter:
    env: Env
    schema: str
    tables: list[str]
    _before: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        conn = self.env.conn
        if conn.info.server_version >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")  # this session's counters land when it ends
        own = conn.statements
        row = conn.execute(_SNAPSHOT, (self.schema, self.tables)).fetchone()
        assert row is not None
        return {**dict(zip(_FIELDS, row, strict=True)), "own_statements": own}

    def start(self) -> None:
        """Before the phase; connections already open (a warmed pool) may stay open."""
        settle(self.env, closed=False)
        self._before = self.snapshot()

    def stop(self, jobs: int) -> dict[str, Any]:
        """Deltas since ``start()``: per 1,000 jobs, and the totals."""
        assert self._before is not None, "start() first"
        settle(self.env)
        after = self.snapshot()
        (wal,) = self.env.conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::float8",
                                       (after["wal_lsn"], self._before["wal_lsn"])).fetchone()
        totals = {k: int(after[k]) - int(self._before[k]) for k in _FIELDS if k != "wal_lsn"}
        totals["commits"] -= after["own_statements"] - self._before["own_statements"]  # the bench's own reads
        totals["wal_bytes"] = int(wal)
        per = 1000.0 / jobs if jobs else 0.0
        per_1k = {k: round(v * per, 1) for k, v in totals.items() if k != "autovacuum_runs"}
        return {"per_1000_jobs": per_1k, "totals": totals, "jobs": jobs, "tables": self.tables}
