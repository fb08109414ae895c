"""AUTO snapshots: the maintenance leader takes them on a schedule or after N changes, with retention.

Time is pinned with ``now`` (the database clock plus a delta); the change
counter is the statistics system's, flushed on demand with
``pg_stat_force_next_flush()``. Nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

import factories
import pytest

from pgq.pool import make_pool
from pgq.maintenance import Maintenance
from pgq.settings import Settings
from pgq.snapshots.auto import AutoSnapshots

pytestmark = pytest.mark.integration


def _kinds(conn):
    return [r[0] for r in conn.execute(
        "SELECT snapshot_type || '/' || origin FROM pgq.state_snapshots ORDER BY created_at, id").fetchall()]


def test_auto_snapshots_are_off_by_default_and_the_leader_takes_none(db_url, conn):
    factories.insert_job(conn)
    settings = Settings(database_url=db_url)
    pool = make_pool(db_url, max_size=2)
    try:
        report = Maintenance(settings, pool).run_once()
    finally:
        pool.close()
    assert report.leader and report.snapshots.taken is None
    assert _kinds(conn) == []


def test_the_leader_takes_a_first_full_then_one_per_interval(db_url, conn):
    factories.insert_job(conn)
    settings = Settings(database_url=db_url, snapshot_interval_seconds=60, snapshot_full_every=2)
    pool = make_pool(db_url, max_size=2)
    try:
        first = Maintenance(settings, pool).run_once()
        again = Maintenance(settings, pool).run_once()  # the latest is seconds old: not due
    finally:
        pool.close()
    auto = AutoSnapshots(settings)
    now = factories.db_now(conn)
    later = auto.run_once(conn, now=now + dt.timedelta(seconds=61))
    much_later = auto.run_once(conn, now=now + dt.timedelta(seconds=200))

    assert (first.snapshots.reason, first.snapshots.taken.kind) == ("first", "FULL")
    assert again.snapshots.taken is None
    assert (later.reason, later.taken.kind) == ("interval", "INCREMENTAL")
    assert (much_later.reason, much_later.taken.kind) == ("interval", "FULL")  # the chain had 2 members
    assert _kinds(conn) == ["FULL/auto", "INCREMENTAL/auto", "FULL/auto"]


def test_the_leader_takes_one_after_n_changes_to_the_jobs_table(db_url, conn):
    settings = Settings(database_url=db_url, snapshot_after_changes=10)
    auto = AutoSnapshots(settings)
    assert auto.run_once(conn).reason == "first"
    factories.insert_jobs(conn, 5)
    conn.execute("SELECT pg_stat_force_next_flush()")
    not_yet = auto.run_once(conn)
    factories.insert_jobs(conn, 5)
    conn.execute("SELECT pg_stat_force_next_flush()")
    due = auto.run_once(conn)

    assert not_yet.taken is None
    assert due.reason == "changes" and due.taken.metadata["jobs"] == 10


def test_retention_deletes_old_chains_but_keeps_the_newest_full(db_url, conn):
    settings = Settings(database_url=db_url, snapshot_interval_seconds=60, snapshot_retention_seconds=3600)
    auto = AutoSnapshots(settings)
    now = factories.db_now(conn)
    auto.run_once(conn, now=now)
    conn.execute("UPDATE pgq.state_snapshots SET created_at = created_at - interval '2 hours'")

    report = auto.run_once(conn, now=now)  # due (interval): an INCREMENTAL on the old FULL, which keeps it
    assert report.taken.kind == "INCREMENTAL" and report.pruned == 0
    conn.execute("UPDATE pgq.state_snapshots SET created_at = created_at - interval '2 hours'")
    conn.execute("UPDATE pgq.state_snapshots SET metadata = metadata || '{\"chain_position\": 99}'")
    fresh = auto.run_once(conn, now=now)  # a new FULL (chain too long); the old chain is now past retention

    assert fresh.taken.kind == "FULL" and fresh.pruned == 2
    assert _kinds(conn) == ["FULL/auto"]
