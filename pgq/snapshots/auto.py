"""AUTO snapshots: the maintenance leader takes one on a schedule or after N changes, with retention.

``AutoSnapshots.run_once(conn)`` is called by ``pgq.maintenance`` after the
leader's round. It decides whether a snapshot is due (none yet, the latest is
older than ``snapshot_interval_seconds``, or the jobs table saw
``snapshot_after_changes`` row changes since), takes it (kind AUTO: an
INCREMENTAL, or a FULL every ``snapshot_full_every``), then applies
``snapshot_retention_seconds``. The decision and the snapshot happen under the
snapshot lock (non-blocking here), so two leaders in a row never take two.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pgq.settings import Settings
from pgq.snapshots import capture
from pgq.snapshots.capture import Conn
from pgq.snapshots.format import SnapshotInfo
from pgq.snapshots.queries import SnapshotQueries

log = logging.getLogger("pgq.snapshots")


@dataclass(frozen=True)
class AutoReport:
    """What one AUTO pass did."""

    taken: SnapshotInfo | None = None
    reason: str | None = None  # first, interval or changes
    pruned: int = 0  # snapshots deleted by retention
    busy: bool = False  # another session was taking a snapshot: nothing done


class AutoSnapshots:
    """The leader's AUTO snapshots for one schema."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queries = SnapshotQueries(settings.schema)

    @property
    def enabled(self) -> bool:
        return self.settings.snapshot_interval_seconds > 0 or self.settings.snapshot_after_changes > 0

    def due(self, conn: Conn, now: dt.datetime) -> str | None:
        """Why a snapshot is due at ``now`` (first, interval, changes), or None."""
        q, settings = self.queries, self.settings
        row = conn.execute(q.latest_local).fetchone()
        if row is None:
            return "first"
        latest = capture.info_from_row(row)
        interval = settings.snapshot_interval_seconds
        if interval > 0 and (now - latest.created_at).total_seconds() >= interval:
            return "interval"
        if settings.snapshot_after_changes > 0:
            counted = conn.execute(q.changes, [q.jobs_table]).fetchone()
            current = int(counted[0]) if counted and counted[0] is not None else 0
            recorded = int(latest.metadata.get("changes_counter", 0))
            # A counter below the recorded one was reset (pg_stat_reset, a crash): take one.
            if current - recorded >= settings.snapshot_after_changes or current < recorded:
                return "changes"
        return None

    def run_once(self, conn: Conn, now: dt.datetime | None = None) -> AutoReport:
        """Take an AUTO snapshot if one is due, then apply retention (commits). ``now``: tests pin the time."""
        if not self.enabled:
            return AutoReport()
        q = self.queries
        capture.check_revision(conn, q)
        row = conn.execute(q.try_lock, [q.lock_key, now]).fetchone()
        assert row is not None
        if not row[0]:
            return AutoReport(busy=True)
        try:
            reason = self.due(conn, row[1])
            taken = None
            if reason is not None:
                taken = capture.create(conn, q.schema, "AUTO", origin="auto", full_every=self.settings.snapshot_full_every)
                log.info("snapshots: took %s snapshot %s (%s jobs; due: %s)", taken.kind, taken.id,
                         taken.metadata.get("jobs"), reason)
            pruned_row = conn.execute(q.prune, [self.settings.snapshot_retention_seconds, row[1]]).fetchone()
            pruned = int(pruned_row[0]) if pruned_row else 0
        finally:
            conn.execute(q.unlock, [q.lock_key])
        if pruned:
            log.info("snapshots: retention deleted %d snapshot(s)", pruned)
        return AutoReport(taken, reason, pruned)
