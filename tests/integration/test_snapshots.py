"""pgq.snapshots against a real Postgres: FULL / INCREMENTAL capture, restore policies, two databases.

Expected states are written from the rules in docs/snapshots.md (what a
snapshot holds, how a restore treats running jobs, conflicts and unique
keys), and read back with plain SQL, never with the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgq import snapshots
from pgq.errors import SnapshotError, SnapshotIncompatible
from pgq.settings import Settings
import factories

pytestmark = pytest.mark.integration


@pytest.fixture
def other_db_url(clone_pool: Any, pg_server: Any) -> Iterator[str]:
    """A second fresh migrated database, for restores across databases."""
    name = clone_pool.take()
    yield pg_server.url_for(name)
    clone_pool.give_back(name)


def _settings(url: str) -> Settings:
    return Settings(database_url=url)


def live_jobs(conn: psycopg.Connection[Any]) -> dict[int, tuple[Any, ...]]:
    """id -> (queue, task, payload, priority, status, attempts, unique_key) of the jobs still to run."""
    rows = conn.execute(
        "SELECT id, queue, task, payload, priority, status::text, attempts, unique_key FROM pgq.jobs"
        " WHERE status IN ('waiting', 'queued', 'running', 'retrying')").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


# ---------------------------------------------------------------- FULL


def test_full_snapshot_holds_the_non_terminal_jobs_their_edges_and_the_workers(db_url, conn):
    worker = factories.insert_worker(conn, hostname="h1")
    queued = factories.insert_job(conn, payload={"to": "a\tb\nc\\d é"})
    waiting = factories.insert_job(conn, status="waiting")
    running = factories.insert_job(conn, status="running", worker_id=worker)
    retrying = factories.insert_job(conn, status="retrying")
    done = [factories.insert_job(conn, status=s) for s in ("completed", "dead", "cancelled")]
    conn.execute("INSERT INTO pgq.job_dependencies (parent_id, child_id) VALUES (%s, %s), (%s, %s)",
                 (queued, waiting, done[0], waiting))

    info = snapshots.create(_settings(db_url))

    assert info.kind == "FULL" and info.origin == "manual" and info.base_id is None
    assert info.metadata["jobs"] == 4 and info.metadata["edges"] == 1 and info.metadata["workers"] == 1
    assert info.metadata["statuses"] == {"queued": 1, "waiting": 1, "running": 1, "retrying": 1}
    _, state = snapshots.load(_settings(db_url), info.id)
    assert sorted(int(k) for k in state.sections["jobs"]) == sorted([queued, waiting, running, retrying])
    assert list(state.sections["edges"]) == [f"{queued}\t{waiting}".encode()]
    assert list(state.sections["workers"]) == [str(worker).encode()]
    row = conn.execute("SELECT snapshot_type, origin, format_version, schema_revision, octet_length(body) > 0,"
                       " db_snapshot = %s FROM pgq.state_snapshots", (info.db_snapshot,)).fetchone()
    assert row == ("FULL", "manual", 2, info.schema_revision, True, True)


def test_format_2_keeps_effective_priority_group_and_trace(db_url, other_db_url, conn, connect):
    job = factories.insert_job(conn, priority=1)
    conn.execute("UPDATE pgq.jobs SET effective_priority = 4, group_key = 'tenant\ta',"
                 " trace_context = '{\"traceparent\": \"00-ab-cd-01\"}' WHERE id = %s", (job,))
    info = snapshots.create(_settings(db_url))
    snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))
    wanted = "SELECT priority, effective_priority, group_key, trace_context FROM pgq.jobs WHERE id = %s"
    assert connect(url=other_db_url).execute(wanted, (job,)).fetchone() == conn.execute(wanted, (job,)).fetchone() \
        == (1, 4, "tenant\ta", {"traceparent": "00-ab-cd-01"})


def test_a_format_1_snapshot_is_still_read(db_url, other_db_url, conn, connect):
    """A snapshot stored before format 2 (revision 0011): its jobs come back without the new columns."""
    from pgq.snapshots.format import JOB_COLUMNS, compress, decode_sections, decompress, encode_full
    job = factories.insert_job(conn, payload={"n": 1})
    info = snapshots.create(_settings(db_url))
    body, sha = conn.execute("SELECT body, body_sha256 FROM pgq.state_snapshots WHERE id = %s",
                             (info.id,)).fetchone()
    sections = decode_sections(decompress(bytes(body), sha, "test"))
    old_fields = len(JOB_COLUMNS) - 3  # format 1 had neither effective_priority, group_key nor trace_context
    sections["jobs"] = [b"\t".join(line.split(b"\t")[:old_fields]) for line in sections["jobs"]]
    old_body, old_sha = compress(encode_full(sections))
    conn.execute("UPDATE pgq.state_snapshots SET body = %s, body_sha256 = %s, format_version = 1 WHERE id = %s",
                 (old_body, old_sha, info.id))
    snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))
    assert connect(url=other_db_url).execute("SELECT payload, group_key, effective_priority FROM pgq.jobs"
                                             " WHERE id = %s", (job,)).fetchone() == ({"n": 1}, None, None)


def test_snapshot_sees_one_database_snapshot_and_a_late_commit_reaches_the_next_incremental(db_url, conn, connect):
    first, second = factories.insert_job(conn, priority=1), factories.insert_job(conn, priority=1)
    base = snapshots.create(_settings(db_url))
    slow = connect(autocommit=False)
    # A transaction that started before the next snapshot and commits after it
    # (out of order relative to the snapshot boundary).
    slow.execute("UPDATE pgq.jobs SET priority = 5 WHERE id = %s", (first,))
    conn.execute("UPDATE pgq.jobs SET priority = 4 WHERE id = %s", (second,))

    middle = snapshots.create(_settings(db_url), kind="INCREMENTAL")
    slow.commit()
    last = snapshots.create(_settings(db_url), kind="INCREMENTAL")

    assert middle.base_id == base.id and last.base_id == middle.id and last.full_id == base.id
    assert middle.metadata["changed"]["jobs"] == 1 and last.metadata["changed"]["jobs"] == 1
    _, at_middle = snapshots.load(_settings(db_url), middle.id)
    _, at_last = snapshots.load(_settings(db_url), last.id)
    priority = snapshots.format.JOB_COLUMNS.index("priority")
    assert snapshots.field_at(at_middle.sections["jobs"][str(first).encode()], priority) == b"1"
    assert snapshots.field_at(at_middle.sections["jobs"][str(second).encode()], priority) == b"4"
    assert snapshots.field_at(at_last.sections["jobs"][str(first).encode()], priority) == b"5"
    assert snapshots.diff(_settings(db_url), last.id).empty()


def test_incremental_records_deletions_and_terminal_jobs_as_removed(db_url, conn):
    kept, finished, deleted = (factories.insert_job(conn) for _ in range(3))
    base = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (finished,))
    conn.execute("DELETE FROM pgq.jobs WHERE id = %s", (deleted,))
    added = factories.insert_job(conn)

    inc = snapshots.create(_settings(db_url), kind="INCREMENTAL")

    assert inc.metadata["deleted"]["jobs"] == 2 and inc.metadata["changed"]["jobs"] == 1
    _, state = snapshots.load(_settings(db_url), inc.id)
    assert sorted(int(k) for k in state.sections["jobs"]) == [kept, added]
    found = snapshots.diff(_settings(db_url), base.id, inc.id)
    assert found.removed["jobs"] == sorted([str(finished), str(deleted)]) and found.added["jobs"] == [str(added)]


def test_auto_takes_a_full_first_then_incrementals_then_a_full_again(db_url, conn):
    factories.insert_job(conn)
    kinds = [snapshots.create(_settings(db_url), kind="AUTO", full_every=3).kind for _ in range(5)]
    assert kinds == ["FULL", "INCREMENTAL", "INCREMENTAL", "FULL", "INCREMENTAL"]


def test_incremental_without_a_previous_snapshot_is_refused_and_stores_nothing(db_url, conn):
    with pytest.raises(SnapshotError, match="take a FULL first"):
        snapshots.create(_settings(db_url), kind="INCREMENTAL")
    assert factories.table_counts(conn)["state_snapshots"] == 0


# ---------------------------------------------------------------- restore


def test_restore_into_another_database_gives_the_same_jobs_edges_and_worker_history(db_url, other_db_url, conn, connect):
    worker = factories.insert_worker(conn, status="active")
    jobs = [factories.insert_job(conn, payload={"n": n, "text": "tab\there"}, priority=1 + n % 5, unique_key=f"k{n}")
            for n in range(20)]
    conn.execute("INSERT INTO pgq.job_dependencies (parent_id, child_id) VALUES (%s, %s)", (jobs[0], jobs[1]))
    info = snapshots.create(_settings(db_url))
    expected = live_jobs(conn)

    report = snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))

    other = connect(url=other_db_url)
    assert live_jobs(other) == expected
    assert sorted(report.inserted) == sorted(jobs) and report.edges_added == 1 and report.workers_added == 1
    assert other.execute("SELECT parent_id, child_id FROM pgq.job_dependencies").fetchall() == [(jobs[0], jobs[1])]
    assert other.execute("SELECT status::text, current_load FROM pgq.workers WHERE id = %s",
                         (worker,)).fetchone() == ("stopped", 0)
    # New enqueues there do not collide with the restored ids.
    new_id = other.execute("SELECT pgq.enqueue_job('after_restore')").fetchone()[0]
    assert new_id > max(jobs)


def test_export_then_import_moves_a_snapshot_between_databases(db_url, other_db_url, conn, connect, tmp_path):
    for n in range(5):
        factories.insert_job(conn, payload={"n": n})
    base = snapshots.create(_settings(db_url))
    factories.insert_job(conn, payload={"n": 99})
    inc = snapshots.create(_settings(db_url), kind="INCREMENTAL")
    expected = live_jobs(conn)
    path = tmp_path / "queue.pgqs"

    exported = snapshots.export(_settings(db_url), inc.id, path)
    imported = snapshots.import_file(_settings(other_db_url), path)
    snapshots.restore(_settings(other_db_url), imported.id)

    assert exported.kind == "FULL" and imported.id == inc.id and imported.origin == "import"
    assert live_jobs(connect(url=other_db_url)) == expected
    assert base.id != inc.id


@pytest.mark.parametrize("policy, expected_priority", [("skip", 2), ("overwrite", 1), ("newest", 2)])
def test_conflict_policy_decides_between_this_database_and_the_snapshot(db_url, conn, policy, expected_priority):
    job = factories.insert_job(conn, priority=1)
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET priority = 2, updated_at = updated_at + interval '1 second' WHERE id = %s", (job,))

    report = snapshots.restore(_settings(db_url), info.id, policy=policy)

    assert factories.job(conn, job)["priority"] == expected_priority
    assert (report.overwritten, report.kept) == (([job], []) if policy == "overwrite" else ([], [job]))


def test_newest_takes_the_snapshot_row_when_it_is_the_later_one(db_url, conn):
    job = factories.insert_job(conn, priority=1)
    conn.execute("UPDATE pgq.jobs SET priority = 3, updated_at = updated_at + interval '1 hour' WHERE id = %s", (job,))
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET priority = 2, updated_at = updated_at - interval '2 hours' WHERE id = %s", (job,))

    snapshots.restore(_settings(db_url), info.id, policy="newest")

    assert factories.job(conn, job)["priority"] == 3


def test_a_job_running_at_snapshot_time_comes_back_queued_with_its_attempt_counted(db_url, other_db_url, conn, connect):
    worker = factories.insert_worker(conn)
    job = factories.insert_job(conn, status="running", worker_id=worker, attempts=2, max_attempts=3)
    last = factories.insert_job(conn, status="running", worker_id=worker, attempts=3, max_attempts=3)
    info = snapshots.create(_settings(db_url))

    report = snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))

    other = connect(url=other_db_url)
    restored = factories.job(other, job)
    assert (restored["status"], restored["attempts"], restored["claim_position"]) == ("queued", 2, None)
    # Its last attempt was interrupted: it gets one more run rather than none.
    assert factories.job(other, last)["attempts"] == 2
    runs = factories.executions(other, job)
    assert [(e["attempt"], e["outcome"], e["worker_id"]) for e in runs] == [(2, "interrupted", worker)]
    assert report.requeued_running == 2


def test_a_running_job_whose_worker_row_is_gone_still_has_its_attempt_recorded(db_url, other_db_url, conn, connect):
    worker = factories.insert_worker(conn)
    job = factories.insert_job(conn, status="running", worker_id=worker, attempts=1)
    conn.execute("UPDATE pgq.jobs SET claim_position = 7 WHERE id = %s", (job,))
    conn.execute("DELETE FROM pgq.workers WHERE id = %s", (worker,))  # pruned, say
    info = snapshots.create(_settings(db_url))

    snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))

    other = connect(url=other_db_url)
    assert (factories.job(other, job)["status"], factories.job(other, job)["attempts"]) == ("queued", 1)
    assert [(e["attempt"], e["outcome"]) for e in factories.executions(other, job)] == [(1, "interrupted")]


def test_a_running_job_whose_handler_had_not_started_gets_its_attempt_back(db_url, other_db_url, conn, connect):
    worker = factories.insert_worker(conn)
    job = factories.insert_job(conn, status="running", worker_id=worker, attempts=1)
    # Claimed at position 7, the worker reported started through 5: never started.
    conn.execute("UPDATE pgq.jobs SET claim_position = 7 WHERE id = %s", (job,))
    conn.execute("UPDATE pgq.workers SET started_through = 5 WHERE id = %s", (worker,))
    info = snapshots.create(_settings(db_url))

    snapshots.restore(_settings(other_db_url), info.id, source=_settings(db_url))

    other = connect(url=other_db_url)
    restored = factories.job(other, job)
    assert (restored["status"], restored["attempts"], restored["free_rescues"]) == ("queued", 0, 1)
    assert factories.executions(other, job) == []


def test_a_job_running_in_the_target_is_never_overwritten(db_url, conn):
    job = factories.insert_job(conn)
    info = snapshots.create(_settings(db_url))
    worker = factories.insert_worker(conn)
    conn.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, started_at = now(), attempts = 1"
                 " WHERE id = %s", (worker, job))

    report = snapshots.restore(_settings(db_url), info.id, policy="overwrite")

    assert report.kept_running == [job]
    assert (factories.job(conn, job)["status"], factories.job(conn, job)["worker_id"]) == ("running", worker)


def test_restore_never_makes_a_second_live_job_with_one_unique_key(db_url, conn):
    old = factories.insert_job(conn, unique_key="welcome:42")
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET status = 'cancelled', finished_at = now() WHERE id = %s", (old,))
    new = factories.insert_job(conn, unique_key="welcome:42")

    report = snapshots.restore(_settings(db_url), info.id, policy="overwrite")

    assert report.blocked == [old]
    live = conn.execute("SELECT id FROM pgq.jobs WHERE unique_key = 'welcome:42'"
                        " AND status IN ('waiting', 'queued', 'running', 'retrying')").fetchall()
    assert live == [(new,)]


def test_overwriting_a_dead_job_takes_it_out_of_the_dead_letter_queue(db_url, conn):
    job = factories.insert_job(conn)
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET status = 'dead', attempts = max_attempts, finished_at = now() WHERE id = %s", (job,))
    factories.insert_dead_letter(conn, job)

    snapshots.restore(_settings(db_url), info.id, policy="overwrite")

    assert factories.job(conn, job)["status"] == "queued"
    assert [d["requeued_at"] is not None for d in factories.dead_letters(conn, job)] == [True]


def test_dry_run_reports_the_plan_and_changes_nothing(db_url, conn):
    kept = factories.insert_job(conn, priority=1)
    gone = factories.insert_job(conn)
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET priority = 2 WHERE id = %s", (kept,))
    conn.execute("DELETE FROM pgq.jobs WHERE id = %s", (gone,))
    before = factories.snapshot(conn)

    report = snapshots.restore(_settings(db_url), info.id, policy="overwrite", dry_run=True)

    assert factories.snapshot(conn) == before
    assert (report.inserted, report.overwritten, report.dry_run) == ([gone], [kept], True)
    assert report.lines() == [f"~ job {kept}: overwrite (here queued, snapshot queued)",
                              f"+ job {gone}: insert (here absent, snapshot queued)"]


def test_a_restore_that_fails_half_way_leaves_nothing_behind(db_url, other_db_url, conn, connect):
    factories.insert_worker(conn)
    good = factories.insert_job(conn)
    bad = factories.insert_job(conn)
    info = snapshots.create(_settings(db_url))
    info_, state = snapshots.load(_settings(db_url), info.id)
    # One row the jobs table refuses (priority 9): the temporary table takes it, the INSERT does not.
    line = state.sections["jobs"][str(bad).encode()]
    fields = line.split(b"\t")
    fields[snapshots.format.JOB_COLUMNS.index("priority")] = b"9"
    state.sections["jobs"][str(bad).encode()] = b"\t".join(fields)
    other = connect(url=other_db_url)
    before = factories.snapshot(other)

    with pytest.raises(SnapshotIncompatible, match="refuses one of its rows.*jobs_priority_range"):
        with psycopg.connect(other_db_url, autocommit=True) as target:
            snapshots.restoring.restore_state(target, "pgq", info_, state)

    assert factories.snapshot(other) == before
    assert good != bad


def test_point_in_time_uses_the_latest_snapshot_at_or_before_it(db_url, conn, other_db_url, connect):
    job = factories.insert_job(conn, priority=1)
    first = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET priority = 2 WHERE id = %s", (job,))
    second = snapshots.create(_settings(db_url), kind="INCREMENTAL")
    conn.execute("UPDATE pgq.jobs SET priority = 3 WHERE id = %s", (job,))
    snapshots.create(_settings(db_url), kind="INCREMENTAL")
    between = second.created_at + (dt.timedelta(microseconds=1))

    info, _ = snapshots.load(_settings(db_url), at=between)
    snapshots.restore(_settings(other_db_url), at=between, source=_settings(db_url))

    assert info.id == second.id
    assert factories.job(connect(url=other_db_url), job)["priority"] == 2
    assert snapshots.load(_settings(db_url), at=first.created_at)[0].id == first.id


def test_list_and_show_and_prune_keep_whole_chains(db_url, conn):
    old_full = snapshots.create(_settings(db_url))
    old_inc = snapshots.create(_settings(db_url), kind="INCREMENTAL")
    conn.execute("UPDATE pgq.state_snapshots SET created_at = created_at - interval '10 days'")
    new_full = snapshots.create(_settings(db_url))

    assert [i.id for i in snapshots.list_snapshots(_settings(db_url))] == [old_full.id, old_inc.id, new_full.id]
    assert snapshots.show(_settings(db_url), old_inc.id).base_id == old_full.id
    assert snapshots.prune(_settings(db_url), 5 * 86400) == 2
    assert [i.id for i in snapshots.list_snapshots(_settings(db_url))] == [new_full.id]
    # The newest FULL's chain stays however old it is.
    assert snapshots.prune(_settings(db_url), 0, now=new_full.created_at + dt.timedelta(days=100)) == 0


def test_the_snapshot_commands_take_list_show_diff_export_import_and_restore(db_url, other_db_url, conn, tmp_path):
    from click.testing import CliRunner

    from pgq.cli import main

    job = factories.insert_job(conn)
    runner = CliRunner()
    here, there = ["--database-url", db_url, "snapshot"], ["--database-url", other_db_url, "snapshot"]

    created = runner.invoke(main, [*here, "create", "--json"])
    snapshot_id = json.loads(created.output)["id"]
    conn.execute("DELETE FROM pgq.jobs WHERE id = %s", (job,))
    listed = runner.invoke(main, [*here, "list"])
    shown = runner.invoke(main, [*here, "show", snapshot_id])
    diffed = runner.invoke(main, [*here, "diff", snapshot_id])
    dry = runner.invoke(main, [*here, "restore", snapshot_id, "--dry-run"])
    exported = runner.invoke(main, [*here, "export", snapshot_id, str(tmp_path / "s.pgqs")])
    imported = runner.invoke(main, [*there, "import", str(tmp_path / "s.pgqs")])
    restored = runner.invoke(main, [*there, "restore", snapshot_id, "--yes"])

    assert created.exit_code == 0 and snapshot_id in listed.output and "FULL" in listed.output
    assert json.loads(shown.output)["metadata"]["jobs"] == 1
    assert diffed.output.splitlines() == [f"- job {job}"]
    assert dry.exit_code == 0 and f"+ job {job}: insert (here absent, snapshot queued)" in dry.output
    assert factories.statuses(conn, [job]) == {}  # the dry run changed nothing
    assert exported.exit_code == 0 and imported.exit_code == 0 and restored.exit_code == 0, restored.output
    assert "restored snapshot" in restored.output and "inserted 1" in restored.output


def test_a_claim_that_commits_while_a_restore_waits_for_its_row_lock_is_seen_by_the_plan(db_url, conn, connect):
    import threading

    job = factories.insert_job(conn, priority=1)
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.jobs SET priority = 2 WHERE id = %s", (job,))  # the plan says: overwrite
    other = factories.insert_job(conn)  # not in the snapshot
    worker = factories.insert_worker(conn)
    claimer = connect(autocommit=False)
    # A claim in flight: the job is running for the worker, not yet committed.
    claimer.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, started_at = now(), attempts = 1"
                    " WHERE id = %s", (worker, job))
    reports: list[Any] = []
    restorer = threading.Thread(target=lambda: reports.append(
        snapshots.restore(_settings(db_url), info.id, policy="overwrite")))
    restorer.start()
    factories.eventually(lambda: conn.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('transactionid', 'tuple')").fetchone()[0],
        "the restore to wait for the claimed row")
    # No table lock: another worker claims another job while the restore is under way.
    with psycopg.connect(db_url, autocommit=True) as peer:
        peer.execute("SET lock_timeout = '2s'")
        peer.execute("UPDATE pgq.jobs SET status = 'running', worker_id = %s, started_at = now(), attempts = 1"
                     " WHERE id = %s", (worker, other))
    claimer.commit()
    restorer.join(timeout=60)

    (report,) = reports
    assert report.kept_running == [job] and report.overwritten == []
    assert (factories.job(conn, job)["status"], factories.job(conn, job)["worker_id"]) == ("running", worker)
    assert factories.job(conn, other)["status"] == "running"


def test_an_insert_that_meets_a_unique_key_enqueued_after_the_plan_is_reported_blocked(db_url, conn, connect):
    import threading

    old = factories.insert_job(conn, unique_key="welcome:7")
    info = snapshots.create(_settings(db_url))
    conn.execute("DELETE FROM pgq.jobs WHERE id = %s", (old,))
    producer = connect(autocommit=False)
    # An enqueue in flight holds the key: invisible to the plan, met by the insert.
    producer.execute("INSERT INTO pgq.jobs (task, unique_key) VALUES ('t', 'welcome:7')")
    reports: list[Any] = []
    restorer = threading.Thread(target=lambda: reports.append(snapshots.restore(_settings(db_url), info.id)))
    restorer.start()
    factories.eventually(lambda: conn.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'").fetchone()[0],
        "the restore's insert to wait for the enqueue")
    producer.commit()
    restorer.join(timeout=60)

    (report,) = reports
    assert (report.inserted, report.blocked) == ([], [old])
    live = conn.execute("SELECT id, task FROM pgq.jobs WHERE unique_key = 'welcome:7'").fetchall()
    assert [task for _, task in live] == ["t"] and old not in [i for i, _ in live]
