"""Restoring a snapshot's state into a database, with a conflict policy, in one transaction.

The snapshot's rows are COPied into temporary tables, a plan gives each job
one action (insert, overwrite, same, keep, keep_running, blocked), and the plan
is applied with set-based statements. A dry run computes the same plan and
rolls back. The rules (docs/snapshots.md): a job running in the target is never
touched; a unique key never gets a second live job; jobs running at snapshot
time come back queued with their attempt accounted for; worker rows come back
as stopped history. No table lock: staging and the plan lock nothing; the rows
to overwrite are locked (``FOR UPDATE``) and planned again before the writes, and
inserts that meet a row committed after the plan do nothing and are reported
blocked, so workers keep claiming other jobs throughout.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgq.errors import SnapshotCorrupt, SnapshotIncompatible, ValidationError
from pgq.snapshots.capture import Conn, check_revision
from pgq.snapshots.format import SECTIONS, SnapshotInfo, State
from pgq.snapshots.queries import RestoreStatements, SnapshotQueries

POLICIES = ("skip", "overwrite", "newest")
_COPY_BLOCK = 1 << 20  # bytes per COPY write


@dataclass
class RestoreReport:
    """What a restore did (or, for a dry run, would do), job ids per action."""

    snapshot_id: uuid.UUID
    policy: str
    dry_run: bool
    inserted: list[int] = field(default_factory=list)
    overwritten: list[int] = field(default_factory=list)
    same: list[int] = field(default_factory=list)  # identical here already
    kept: list[int] = field(default_factory=list)  # the policy kept this database's row
    kept_running: list[int] = field(default_factory=list)  # running here: its worker's, never overwritten
    blocked: list[int] = field(default_factory=list)  # another live job here holds its unique key
    requeued_running: int = 0  # of the inserted/overwritten: running at snapshot time, back as queued
    edges_added: int = 0
    workers_added: int = 0
    # (job id, action, status here or None, status in the snapshot)
    plan: list[tuple[int, str, str | None, str]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"inserted": len(self.inserted), "overwritten": len(self.overwritten), "same": len(self.same),
                "kept": len(self.kept), "kept_running": len(self.kept_running), "blocked": len(self.blocked),
                "requeued_running": self.requeued_running, "edges_added": self.edges_added,
                "workers_added": self.workers_added}

    def lines(self, limit: int = 50) -> list[str]:
        """The plan as text, one line per job that changes or conflicts (``limit`` per action)."""
        symbols = {"insert": "+", "overwrite": "~", "keep": "=", "keep_running": "!", "blocked": "x"}
        out: list[str] = []
        shown: dict[str, int] = {}
        for job_id, action, here, there in self.plan:
            if action == "same":
                continue
            shown[action] = shown.get(action, 0) + 1
            if shown[action] > limit:
                continue
            here_text = "absent" if here is None else here
            out.append(f"{symbols[action]} job {job_id}: {action} (here {here_text}, snapshot {there})")
        out.extend(f"  ... and {n - limit} more {action}" for action, n in shown.items() if n > limit)
        return out


def _write(copy: Any, lines: Iterable[bytes]) -> None:
    block: list[bytes] = []
    size = 0
    for line in lines:
        block.append(line)
        size += len(line) + 1
        if size >= _COPY_BLOCK:
            copy.write(b"\n".join(block) + b"\n")
            block, size = [], 0
    if block:
        copy.write(b"\n".join(block) + b"\n")


def restore_state(conn: Conn, schema: str, info: SnapshotInfo, state: State, *, policy: str = "skip",
            dry_run: bool = False, now: dt.datetime | None = None) -> RestoreReport:
    """Restore ``state`` (taken as ``info``) into the database of ``conn``: one transaction.

    Raises:
        ValidationError: an unknown policy.
        SchemaNotReady / SnapshotIncompatible: the target is not at this pgq's revision, or
            the snapshot was taken from a schema at another revision.
    """
    if policy not in POLICIES:
        raise ValidationError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    q = SnapshotQueries(schema)
    revision = check_revision(conn, q)
    if info.schema_revision != revision:
        raise SnapshotIncompatible(f"snapshot {info.id} was taken from a schema at revision {info.schema_revision}; "
                                   f"schema {schema!r} here is at {revision}: restore it into a database at "
                                   f"{info.schema_revision}, then migrate that one")
    report = RestoreReport(info.id, policy, dry_run)
    with conn.transaction():
        _run(conn, q, info, state, report, now)
        if dry_run:
            raise psycopg.Rollback()  # leaves the block quietly, rolled back
    return report


def _run(conn: Conn, q: SnapshotQueries, info: SnapshotInfo, state: State, report: RestoreReport,
         now: dt.datetime | None) -> None:
    r = q.restore
    conn.execute(q.text_settings)
    row = conn.execute("SELECT coalesce(%s, now())", [now]).fetchone()
    assert row is not None
    restore_now = row[0]
    try:
        _stage(conn, r, state)
    except psycopg.DataError as exc:  # a row that does not parse as its table's row
        raise SnapshotCorrupt(f"snapshot {info.id}: a row does not fit its table ({_first_line(exc)})") from exc
    if not report.dry_run:
        conn.execute(r.sequence)
    conn.execute(r.plan, {"policy": report.policy})
    if not report.dry_run:
        try:
            _apply(conn, r, info, report, restore_now)
        except psycopg.IntegrityError as exc:  # a constraint of this database refuses a row
            raise SnapshotIncompatible(f"snapshot {info.id}: this database refuses one of its rows "
                                       f"({_first_line(exc)}); nothing was restored") from exc
    report.plan = [(int(i), str(a), c, str(s)) for i, a, c, s in conn.execute(r.plan_rows).fetchall()]
    buckets = {"insert": report.inserted, "overwrite": report.overwritten, "same": report.same,
               "keep": report.kept, "keep_running": report.kept_running, "blocked": report.blocked}
    for job_id, action, _, _ in report.plan:
        buckets[action].append(job_id)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _count(conn: Conn, statement: str) -> int:
    row = conn.execute(statement).fetchone()
    return int(row[0]) if row else 0


def _stage(conn: Conn, r: RestoreStatements, state: State) -> None:
    """The snapshot's rows into temporary tables (no lock on the queue's tables)."""
    for statement in r.temp:
        conn.execute(statement)
    for name in SECTIONS:
        with conn.cursor().copy(r.copy_in[name]) as copy:
            _write(copy, state.sections[name].values())
    conn.execute(r.analyze)


def _apply(conn: Conn, r: RestoreStatements, info: SnapshotInfo, report: RestoreReport, restore_now: dt.datetime) -> None:
    """Lock the rows to overwrite, plan them again, and write: set-based statements, no table lock."""
    conn.execute(r.lock_overwrites)
    conn.execute(r.replan, {"policy": report.policy})
    conn.execute(r.unstarted)
    params = {"now": restore_now, "taken_at": info.created_at, "snapshot": str(info.id)}
    conn.execute(r.requeue_running, params)
    conn.execute(r.close_dead_letters, params)
    conn.execute(r.overwrite)
    inserted = conn.execute(r.insert).rowcount
    if inserted != _count(conn, r.planned_inserts):
        conn.execute(r.blocked_at_insert)
    conn.execute(r.interrupted_executions, params)
    report.requeued_running = _count(conn, r.requeued_count)
    report.edges_added = conn.execute(r.edges).rowcount
    report.workers_added = conn.execute(r.workers, params).rowcount
