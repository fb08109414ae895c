"""Least privilege: the roles of migration 0003 (``db/roles/001.sql``).

``pgq_producer`` may enqueue, cancel and read status; ``pgq_worker`` may run
jobs and maintenance; neither may change a table except through the stored
functions (the producer may INSERT the columns of a new job, nothing else).
Each test connects as a fresh LOGIN role that holds just the role under test,
drives pgq's own Python code paths (Queue, Worker, Maintenance, the CLI) and
checks what the database recorded as the superuser; forbidden statements must
fail with SQLSTATE 42501 and change nothing.

Roles are cluster-wide: every login role (and every schema-specific pgq role a
test creates) has a unique name and is dropped after the test.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

import factories
import pgq
from pgq.cli import main
from pgq.migrate import downgrade, head_revision, upgrade
from support.schema_dump import dump
from pgq.sqlfiles import read_sql

pytestmark = pytest.mark.integration

PRODUCER, WORKER = "pgq_producer", "pgq_worker"
# Revision 0015 (db/roles/014.sql): the dashboard's roles.
VIEWER, OPERATOR = "pgq_viewer", "pgq_operator"
DENIED = "42501"  # insufficient_privilege


@dataclass(frozen=True)
class Login:
    name: str
    dsn: str  # key=value DSN connecting as this role to the test's database


class Logins:
    """Creates LOGIN roles (and other cluster objects) for one test and drops them after."""

    def __init__(self, admin: psycopg.Connection[Any], db_url: str) -> None:
        self.admin = admin
        self.db_url = db_url
        self.roles: list[str] = []

    def create(self, *member_of: str, options: str = "") -> Login:
        """A new LOGIN role, member of ``member_of``, with a unique name."""
        name = f"pgqt_login_{uuid.uuid4().hex[:12]}"
        password = secrets.token_hex(12)  # unused under trust authentication, needed elsewhere
        self.admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + options).format(
            sql.Identifier(name), sql.Literal(password)))
        self.roles.append(name)
        for role in member_of:
            self.admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name)))
        return Login(name, make_conninfo(self.db_url, user=name, password=password))

    def track(self, role: str) -> None:
        """Drop ``role`` too at the end of the test."""
        self.roles.append(role)

    def drop_all(self) -> None:
        for name in reversed(self.roles):
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            exists = self.admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            if exists:
                # Objects it owns in this database (a migration run as it) go first.
                self.admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                self.admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def logins(conn: psycopg.Connection[Any], db_url: str) -> Iterator[Logins]:
    made = Logins(conn, db_url)
    try:
        yield made
    finally:
        made.drop_all()


def as_role(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def denied(dsn: str, statements: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Run each statement as the login role; return those that were NOT refused with 42501."""
    allowed = []
    with as_role(dsn) as c:
        for statement, params in statements:
            try:
                c.execute(statement, params)
            except psycopg.Error as exc:
                if exc.sqlstate != DENIED:
                    allowed.append(f"{statement}: {exc.sqlstate} {exc}")
            else:
                allowed.append(statement)
    return allowed


def role_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


# ---------------------------------------------------------------- the roles themselves


def test_migration_creates_nologin_roles_named_after_the_schema(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, shobj_description(oid, 'pg_authid')"
        " FROM pg_roles WHERE rolname IN (%s, %s, %s, %s) ORDER BY rolname",
        (PRODUCER, WORKER, VIEWER, OPERATOR)).fetchall()
    assert [r[:5] for r in rows] == [(role, False, False, False, False) for role in (OPERATOR, PRODUCER, VIEWER, WORKER)]
    assert "requeue" in rows[0][5] and "enqueue" in rows[1][5] and "Changes nothing" in rows[2][5]
    assert "claim" in rows[3][5]


# What each role holds directly, by object (PUBLIC and the owner aside): the
# exact inventory, so that a grant added by mistake fails here.
EXPECTED_GRANTS = {
    PRODUCER: {
        ("schema", "pgq", "USAGE"),
        ("table", "jobs", "SELECT"),
        # group_key: revision 0012, db/roles/011.sql; trace_context: revision 0014, db/roles/013.sql
        # (the producer's trace, when tracing is on).
        ("table", "jobs", "INSERT (id, queue, task, payload, priority, run_at, max_attempts, timeout,"
                          " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter, group_key,"
                          " trace_context)"),
        ("table", "jobs_id_seq", "USAGE"),
        ("table", "dead_letter_queue", "SELECT"),
        ("table", "alembic_version", "SELECT"),
        ("table", "queue_stats", "SELECT"),
        ("table", "worker_status", "SELECT"),
        ("table", "job_history", "SELECT"),
        ("table", "job_status_estimates", "SELECT"),  # revision 0005, db/roles/003.sql
        ("table", "health_alerts", "SELECT"),  # revision 0008, db/roles/006.sql
        ("table", "alert_rules", "SELECT"),
        ("function", "enqueue_job", "EXECUTE"),
        ("function", "enqueue_jobs", "EXECUTE"),
        # Revision 0009: enqueue with parents (job graphs).
        ("function", "enqueue_job_v2", "EXECUTE"),
        ("function", "enqueue_jobs_v2", "EXECUTE"),
        ("table", "job_blockers", "SELECT"),
        ("function", "cancel_job", "EXECUTE"),
        # Revision 0010, db/roles/008.sql: pause and resume a queue, see the pauses.
        ("function", "pause_queue", "EXECUTE"),
        ("function", "resume_queue", "EXECUTE"),
        ("table", "queue_pauses", "SELECT"),
        ("table", "paused_queues", "SELECT"),
        # Revision 0010, db/roles/009.sql: applications register periodic schedules.
        ("function", "register_schedule", "EXECUTE"),
        ("table", "schedules", "SELECT"),
        # Revision 0012, db/roles/011.sql: a queue's claim rules and its groups' weights.
        ("function", "set_queue_policy", "EXECUTE"),
        ("function", "clear_queue_policy", "EXECUTE"),
        ("function", "set_group_weight", "EXECUTE"),
        ("function", "attach_group_keys", "EXECUTE"),
        ("table", "queue_policies", "SELECT"),
        ("table", "group_states", "SELECT"),
        ("table", "queue_policy_usage", "SELECT"),
        # Revision 0014, db/roles/013.sql: what the queue exporter reads (`pgq metrics`), and
        # the trace context of jobs enqueued through a function.
        ("function", "collect_metrics", "EXECUTE"),
        ("function", "attach_trace_context", "EXECUTE"),
    },
    WORKER: {
        ("schema", "pgq", "USAGE"),
        ("table", "jobs", "SELECT"),
        ("table", "workers", "SELECT"),
        ("table", "alembic_version", "SELECT"),
        # Revision 0011, db/roles/010.sql: the maintenance leader takes AUTO snapshots.
        ("table", "job_dependencies", "SELECT"),
        ("table", "state_snapshots", "SELECT"),
        *(("function", name, "EXECUTE") for name in (
            "get_runnable_jobs", "complete_jobs", "fail_job", "release_jobs", "register_worker", "heartbeat_worker",
            "deregister_worker", "mark_stale_workers", "fail_timed_out_jobs", "prune_jobs",
            # Redis accelerator (revision 0004, db/roles/002.sql): claim popped ids, run the reconciler.
            "claim_jobs", "mirror_horizon", "runnable_jobs_after",
            # Revision 0005, db/roles/003.sql: the maintenance leader deletes the rows of workers long gone.
            "prune_workers",
            # Claim path (revision 0006, db/roles/004.sql): claims with positions, the heartbeat
            # with the watermark, asking a worker to drain.
            "get_runnable_jobs_v2", "claim_jobs_v2", "heartbeat_worker_v2", "drain_worker",
            # Revision 0007, db/roles/005.sql: a worker records its stuck handlers.
            "set_worker_stuck_handlers",
            # Revision 0008, db/roles/006.sql: the heartbeat with a health sample, pruning samples.
            "heartbeat_worker_v3", "prune_health_logs",
            # Revision 0011, db/roles/010.sql: AUTO snapshots and their retention.
            "save_snapshot", "prune_snapshots",
            # Revision 0014, db/roles/013.sql: the queue exporter (`pgq metrics`).
            "collect_metrics",
            # Revision 0013, db/roles/012.sql: a failing worker evacuates itself.
            "evacuate_worker")),
        # Revision 0010, db/roles/008.sql: the reconciler reads queue_pauses.resumed_at.
        ("table", "queue_pauses", "SELECT"),
        ("table", "paused_queues", "SELECT"),
        # Revision 0010, db/roles/009.sql: workers register their app's schedules, the leader ticks them.
        ("function", "register_schedule", "EXECUTE"),
        ("function", "enqueue_schedule_ticks", "EXECUTE"),
        ("function", "set_schedule_next_tick", "EXECUTE"),
        ("table", "schedules", "SELECT"),
        # Revision 0012, db/roles/011.sql: the leader ages jobs; a Redis-mode worker reads
        # which of its queues have claim rules (they are claimed from Postgres).
        ("function", "age_jobs", "EXECUTE"),
        ("table", "queue_policies", "SELECT"),
        ("table", "group_states", "SELECT"),
        ("table", "queue_policy_usage", "SELECT"),
    },
}

# The dashboard (revision 0015, db/roles/014.sql): the viewer reads, the operator acts through functions.
EXPECTED_GRANTS[VIEWER] = {
    ("schema", "pgq", "USAGE"),
    *(("table", name, "SELECT") for name in (
        "jobs", "workers", "job_executions", "dead_letter_queue", "job_dependencies", "worker_health_logs",
        "alert_rules", "queue_pauses", "schedules", "queue_policies", "group_states", "alembic_version",
        "queue_stats", "worker_status", "job_history", "job_blockers", "health_alerts", "paused_queues",
        "job_status_estimates", "queue_policy_usage")),
    # The list of snapshots, not their bodies.
    ("table", "state_snapshots", "SELECT (id, snapshot_type, origin, base_snapshot_id, full_snapshot_id, created_at,"
                                 " format_version, schema_revision, metadata, body_sha256)"),
}
EXPECTED_GRANTS[OPERATOR] = {
    ("schema", "pgq", "USAGE"),
    *(("function", name, "EXECUTE") for name in (
        "requeue_dead_jobs", "requeue_dead_jobs_v2", "purge_dead_jobs", "drain_worker", "evacuate_worker",
        "pause_queue", "resume_queue")),
}

_DIRECT_GRANTS = """
SELECT 'schema', n.nspname, a.privilege_type
FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
WHERE n.nspname = 'pgq' AND a.grantee = %(role)s::regrole
UNION ALL
SELECT 'table', c.relname, a.privilege_type
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace, aclexplode(c.relacl) AS a
WHERE n.nspname = 'pgq' AND a.grantee = %(role)s::regrole
UNION ALL
SELECT 'table', c.relname, a.privilege_type || ' (' || string_agg(att.attname, ', ' ORDER BY att.attnum) || ')'
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS att ON att.attrelid = c.oid, aclexplode(att.attacl) AS a
WHERE n.nspname = 'pgq' AND a.grantee = %(role)s::regrole
GROUP BY c.relname, a.privilege_type
UNION ALL
SELECT 'function', p.proname, a.privilege_type
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace, aclexplode(p.proacl) AS a
WHERE n.nspname = 'pgq' AND a.grantee = %(role)s::regrole
"""


@pytest.mark.parametrize("role", [PRODUCER, WORKER, VIEWER, OPERATOR])
def test_each_role_holds_exactly_its_grants(conn: psycopg.Connection[Any], role: str) -> None:
    held = {tuple(r) for r in conn.execute(_DIRECT_GRANTS, {"role": role}).fetchall()}
    assert held == EXPECTED_GRANTS[role]


def test_definer_functions_are_closed_to_public_and_pin_their_search_path(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.proconfig,"
        "       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a"
        "               WHERE a.grantee = 0) AS public_execute"
        " FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgq' AND p.prosecdef ORDER BY 1").fetchall()
    granted = {name for _kind, name, _p in EXPECTED_GRANTS[PRODUCER] | EXPECTED_GRANTS[WORKER] if _kind == "function"}
    # Exactly the entry points run as their owner: the granted ones, and the two
    # repairs a DBA may grant to operators (requeue_dead_jobs_v2: revision 0009).
    assert {r[0] for r in rows} == granted | {"requeue_dead_jobs", "requeue_dead_jobs_v2", "purge_dead_jobs"}
    for name, config, public_execute in rows:
        # Temporary objects come last, so a caller's pg_temp.jobs cannot shadow the table.
        assert "search_path=pgq, pg_catalog, pg_temp" in config, name
        assert not public_execute, name
    # The internal helpers are not callable by PUBLIC either.
    helpers = conn.execute(
        "SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgq' AND p.proname = ANY (%s)"
        "   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a"
        "               WHERE a.grantee = 0)",
        (["record_failed_attempt", "notify_queues", "retry_delay", "requeue_dead_jobs", "purge_dead_jobs",
          "requeue_dead_jobs_v2", "release_waiting_children", "lend_priority", "cancel_waiting_descendants"],)).fetchall()
    assert helpers == []


def test_the_viewer_reads_everything_the_dashboard_shows_and_changes_nothing(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    job = factories.insert_job(conn, status="dead", last_error="boom")
    factories.insert_dead_letter(conn, job)
    worker = factories.insert_worker(conn)
    viewer = logins.create(VIEWER).dsn
    with as_role(viewer) as c:
        for relation in [name for kind, name, _p in EXPECTED_GRANTS[VIEWER] if kind == "table"]:
            columns = "id, created_at" if relation == "state_snapshots" else "*"
            c.execute(sql.SQL("SELECT {} FROM pgq.{} LIMIT 1").format(sql.SQL(columns), sql.Identifier(relation)))
    assert denied(viewer, [
        ("SELECT body FROM pgq.state_snapshots", ()),
        ("UPDATE pgq.jobs SET status = 'queued' WHERE id = %s", (job,)),
        ("DELETE FROM pgq.dead_letter_queue", ()),
        ("INSERT INTO pgq.jobs (task) VALUES ('t')", ()),
        ("SELECT pgq.requeue_dead_jobs(ARRAY[%s]::bigint[])", (job,)),
        ("SELECT pgq.drain_worker(%s)", (worker,)),
        ("SELECT pgq.enqueue_job('t')", ()),
        ("SELECT pgq.cancel_job(%s)", (job,)),
    ]) == []
    # The operator acts through the functions only (and needs the viewer to read).
    operator = logins.create(OPERATOR).dsn
    assert denied(operator, [("SELECT 1 FROM pgq.jobs", ()), ("UPDATE pgq.workers SET status = 'draining'", ())]) == []
    with as_role(operator) as c:
        assert c.execute("SELECT * FROM pgq.requeue_dead_jobs(ARRAY[%s]::bigint[])", (job,)).fetchall() == [(job,)]
        assert c.execute("SELECT pgq.drain_worker(%s)", (worker,)).fetchone() == (True,)
    assert factories.job(conn, job)["status"] == "queued"


# ---------------------------------------------------------------- producer


def test_producer_enqueues_cancels_and_reads_status_through_pgq(
    logins: Logins, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = logins.create(PRODUCER).dsn
    dead = factories.insert_job(conn, task="old.job", status="dead")
    factories.insert_dead_letter(conn, dead)
    q = pgq.connect(dsn, strict_tasks=False)
    try:
        one = q.enqueue("mail.send", {"to": "a@b.c"}, queue="emails")            # single INSERT
        later = q.enqueue("mail.send", {"to": "d@e.f"}, delay=60)                # INSERT, run_at in the database
        keyed = q.enqueue("mail.send", {}, unique_key="welcome:1")               # enqueue_jobs()
        again = q.enqueue("mail.send", {}, unique_key="welcome:1")
        many = q.enqueue_many([{"task": "mail.send", "payload": {"n": n}} for n in range(3)])  # COPY
        keyed_many = q.enqueue_many([{"task": "mail.send", "unique_key": f"k{n}"} for n in range(2)])
        with as_role(dsn) as caller:
            with caller.transaction():
                in_tx = q.enqueue_many([{"task": "mail.send"}] * 2, connection=caller)  # COPY in the caller's transaction
        assert q.cancel(many[0]) is True
        assert q.get(one).status is pgq.JobStatus.QUEUED
        with pytest.raises(pgq.WaitTimeout):
            q.wait(one, timeout=0)
        stats = q.stats()
        letters = q.dead_letters()
    finally:
        q.close()

    assert again == keyed
    # Exact counts of the jobs still to run or decide on; a finished (cancelled) job is only estimated.
    assert stats.count(status="queued") == 9 and stats.count(status="dead") == 1 and stats.dead_letters == 1
    assert stats.count(status="cancelled") == 0
    assert [d.job_id for d in letters] == [dead]
    rows = dict(conn.execute("SELECT id, status::text FROM pgq.jobs").fetchall())
    assert set(rows) == {dead, one, later, keyed, *many, *keyed_many, *in_tx}
    assert factories.job(conn, later)["run_at"] > factories.db_now(conn) + dt.timedelta(seconds=50)

    # The operator commands that only read work as the producer too.
    monkeypatch.setenv("PGQ_DATABASE_URL", dsn)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    runner = CliRunner()
    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["dead_letters"] == 1
    listed = runner.invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0 and "old.job" in listed.output
    assert runner.invoke(main, ["workers"]).exit_code == 0


def test_producer_may_not_run_jobs_repair_or_write_tables(logins: Logins, conn: psycopg.Connection[Any]) -> None:
    dsn = logins.create(PRODUCER).dsn
    worker_id = factories.insert_worker(conn)
    running = factories.insert_job(conn, status="running", worker_id=worker_id)
    dead = factories.insert_job(conn, status="dead")
    before = factories.snapshot(conn)

    refused = denied(dsn, [
        ("SELECT * FROM pgq.get_runnable_jobs('{default}', %s, 1)", (worker_id,)),
        ("SELECT * FROM pgq.complete_jobs(%s, %s, '{1}')", (worker_id, [running])),
        ("SELECT pgq.fail_job(%s, %s, 1, 'E', 'm')", (running, worker_id)),
        ("SELECT * FROM pgq.release_jobs(%s, %s, '{1}')", (worker_id, [running])),
        ("SELECT pgq.register_worker(gen_random_uuid(), 'h', 1, '{default}')", ()),
        ("SELECT * FROM pgq.heartbeat_worker(%s)", (worker_id,)),
        ("SELECT * FROM pgq.mark_stale_workers(interval '1 second')", ()),
        ("SELECT pgq.prune_jobs(interval '0')", ()),
        ("SELECT * FROM pgq.requeue_dead_jobs(%s)", ([dead],)),
        ("SELECT * FROM pgq.purge_dead_jobs(%s)", ([dead],)),
        ("SELECT pgq.record_failed_attempt(%s, 'failed', 'E', 'm')", (running,)),
        # A new job, but in a status or with an owner a producer may not choose:
        ("INSERT INTO pgq.jobs (task, status) VALUES ('t', 'completed')", ()),
        ("INSERT INTO pgq.jobs (task, worker_id, attempts) VALUES ('t', gen_random_uuid(), 1)", ()),
        ("INSERT INTO pgq.jobs (task, unique_key) VALUES ('t', 'k')", ()),  # keys go through enqueue_jobs()
        ("UPDATE pgq.jobs SET priority = 5", ()),
        ("DELETE FROM pgq.jobs", ()),
        ("TRUNCATE pgq.jobs", ()),
        ("DROP TABLE pgq.jobs", ()),
        ("ALTER TABLE pgq.jobs DROP CONSTRAINT jobs_priority_range", ()),
        ("SELECT setval('pgq.jobs_id_seq', 1)", ()),
        ("SELECT * FROM pgq.workers", ()),
        ("SELECT * FROM pgq.job_executions", ()),
        ("INSERT INTO pgq.dead_letter_queue (job_id, queue, task, reason) VALUES (%s, 'q', 't', 'fatal')", (running,)),
        ("CREATE FUNCTION pgq.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT now()'", ()),
        ("ALTER FUNCTION pgq.enqueue_job(text, jsonb, text, integer, interval, integer, interval, text,"
         " timestamptz, timestamptz) SECURITY INVOKER", ()),
        ("GRANT pgq_worker TO CURRENT_USER", ()),
    ])

    assert refused == []
    assert factories.snapshot(conn) == before
    # Through pgq the refusal is a DatabaseError that says what to do.
    with pgq.connect(dsn) as q, pytest.raises(pgq.DatabaseError, match="Roles and grants"):
        q.requeue_dead([dead])
    assert factories.snapshot(conn) == before


def test_an_operator_granted_the_repair_functions_requeues_and_purges(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    # The README's example: EXECUTE on the two repairs, nothing on the tables.
    ops = logins.create(PRODUCER)
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pgq.requeue_dead_jobs(bigint[], text, timestamptz),"
                         " pgq.purge_dead_jobs(bigint[], interval, timestamptz) TO {}").format(sql.Identifier(ops.name)))
    first, second = (factories.insert_job(conn, status="dead") for _ in range(2))
    for job_id in (first, second):
        factories.insert_dead_letter(conn, job_id)
    monkeypatch_env = {"PGQ_DATABASE_URL": ops.dsn}
    runner = CliRunner(env=monkeypatch_env)
    requeued = runner.invoke(main, ["dlq", "requeue", str(first)])
    purged = runner.invoke(main, ["dlq", "purge", str(second), "--yes"])
    assert (requeued.exit_code, purged.exit_code) == (0, 0), requeued.output + purged.output
    assert factories.statuses(conn, [first, second]) == {first: "queued"}
    with as_role(ops.dsn) as c, factories.raises_sqlstate(DENIED):
        c.execute("UPDATE pgq.jobs SET status = 'dead' WHERE id = %s", (first,))


# ---------------------------------------------------------------- worker


def test_worker_runs_jobs_listens_heartbeats_and_maintains_through_pgq(
    logins: Logins, conn: psycopg.Connection[Any], settings: pgq.Settings,
) -> None:
    dsn = logins.create(WORKER).dsn
    with pgq.connect(settings=settings, strict_tasks=False) as owner:
        ok = owner.enqueue("w.double", {"n": 21})
        failing = owner.enqueue("w.boom", {}, max_attempts=2)
    # For maintenance: a crashed worker's job, a job far over its timeout on a
    # live worker, and a job finished long ago.
    now = factories.db_now(conn)
    ghost = factories.insert_worker(conn, last_heartbeat=now - dt.timedelta(hours=1))
    orphan = factories.insert_job(conn, task="w.double", payload={"n": 2}, status="running", worker_id=ghost,
                                  started_at=now - dt.timedelta(hours=1))
    busy = factories.insert_worker(conn, queues=["elsewhere"])
    timed = factories.insert_job(conn, task="w.double", queue="elsewhere", status="running", worker_id=busy,
                                 started_at=now - dt.timedelta(hours=1), timeout=dt.timedelta(seconds=5))
    done_long_ago = factories.insert_job(conn, status="completed", finished_at=now - dt.timedelta(days=30))

    q = pgq.connect(dsn, strict_tasks=False, poll_interval_seconds=0.1, heartbeat_interval_seconds=0.5,
                    stale_after_seconds=90, job_retention_seconds=86400)

    @q.task(name="w.double")
    def double(n: int) -> int:
        return 2 * n

    @q.task(name="w.boom")
    def boom() -> None:
        raise RuntimeError("boom")

    try:
        report = pgq.Maintenance(q.settings, q.pool).run_once()
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False,
                          concurrency=4)
        worker.run(burst=True)  # registers, LISTENs, claims, acknowledges, deregisters
    finally:
        q.close()

    assert report.leader and report.rescued_job_ids == [orphan] and report.pruned == 1
    assert [r.job_id for r in report.timed_out] == [timed]
    statuses = factories.statuses(conn, [ok, failing, orphan, timed, done_long_ago])
    assert statuses[ok] == "completed" and factories.job(conn, ok)["result"] == 42
    # The burst run also ran its retry (due within PGQ_BURST_WAIT_SECONDS): both attempts failed.
    assert statuses[failing] == "dead" and "boom" in factories.job(conn, failing)["last_error"]
    assert statuses[orphan] == "completed" and factories.job(conn, orphan)["result"] == 4
    assert statuses[timed] == "retrying"
    assert done_long_ago not in statuses  # pruned
    assert factories.worker(conn, worker.id)["status"] == "stopped"


def test_worker_releases_what_it_claimed_but_did_not_start(logins: Logins, conn: psycopg.Connection[Any]) -> None:
    dsn = logins.create(WORKER).dsn
    job = factories.insert_job(conn)
    worker_id = uuid.uuid4()
    with as_role(dsn) as c:
        c.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 2)", (worker_id,))
        claimed = c.execute("SELECT id, attempts FROM pgq.get_runnable_jobs('{default}', %s, 5)", (worker_id,)).fetchall()
        released = c.execute("SELECT * FROM pgq.release_jobs(%s, %s, %s)",
                             (worker_id, [job], [claimed[0][1]])).fetchall()
        interrupted = c.execute("SELECT pgq.deregister_worker(%s)", (worker_id,)).fetchone()
    assert claimed == [(job, 1)] and released == [(job,)] and interrupted == (0,)
    assert factories.job(conn, job)["status"] == "queued" and factories.job(conn, job)["attempts"] == 0


def test_worker_claims_with_positions_beats_and_drains_and_the_producer_may_not(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    worker_dsn, producer_dsn = logins.create(WORKER).dsn, logins.create(PRODUCER).dsn
    jobs = [factories.insert_job(conn) for _ in range(2)]
    worker_id = uuid.uuid4()
    with as_role(worker_dsn) as c:
        c.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 2)", (worker_id,))
        claimed = c.execute("SELECT id, claim_position FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, 0, 0)",
                            (worker_id,)).fetchall()
        by_id = c.execute("SELECT id, claim_position FROM pgq.claim_jobs_v2(%s, %s, 1, 1)",
                          ([jobs[1]], worker_id)).fetchall()
        beat = c.execute("SELECT status::text, rescued_job_ids FROM pgq.heartbeat_worker_v2(%s, 2, %s, 2)",
                         (worker_id, jobs)).fetchone()
        drained = c.execute("SELECT pgq.drain_worker(%s)", (worker_id,)).fetchone()
        with factories.raises_sqlstate("PQ005"):
            c.execute("SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, 2, 2)", (worker_id,))
    refused = denied(producer_dsn, [
        ("SELECT * FROM pgq.get_runnable_jobs_v2('{default}', %s, 1, 0, 0)", (worker_id,)),
        ("SELECT * FROM pgq.claim_jobs_v2('{1}', %s, 0, 0)", (worker_id,)),
        ("SELECT * FROM pgq.heartbeat_worker_v2(%s)", (worker_id,)),
        ("SELECT pgq.drain_worker(%s)", (worker_id,)),
        ("SELECT * FROM pgq.rescue_job(1, true, 'lost', 'E', 'm', 0, now())", ()),
    ])
    assert (claimed, by_id) == ([(jobs[0], 1)], [(jobs[1], 2)])
    assert beat == ("active", []) and drained == (True,)
    w = factories.worker(conn, worker_id)
    assert (w["status"], w["started_through"]) == ("draining", 2)
    assert refused == []


def test_worker_evacuates_itself_and_the_producer_may_not(logins: Logins, conn: psycopg.Connection[Any]) -> None:
    worker_dsn, producer_dsn = logins.create(WORKER).dsn, logins.create(PRODUCER).dsn
    worker_id = uuid.uuid4()
    with as_role(worker_dsn) as c:
        c.execute("SELECT pgq.register_worker(%s, 'h', 1, '{default}', 2)", (worker_id,))
        refused = denied(producer_dsn, [("SELECT pgq.evacuate_worker(%s, 'r')", (worker_id,))])
        done = c.execute("SELECT pgq.evacuate_worker(%s, 'score 0.1', 'worker')", (worker_id,)).fetchone()
    w = factories.worker(conn, worker_id)
    assert done == (True,) and refused == []
    assert (w["status"], w["evacuation_reason"], w["evacuated_by"]) == ("draining", "score 0.1", "worker")


def test_worker_records_its_stuck_handlers_and_the_producer_may_not(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    worker_dsn, producer_dsn = logins.create(WORKER).dsn, logins.create(PRODUCER).dsn
    worker_id = factories.insert_worker(conn)
    with as_role(worker_dsn) as c:
        c.execute("SELECT pgq.set_worker_stuck_handlers(%s, 2)", (worker_id,))
    refused = denied(producer_dsn, [("SELECT pgq.set_worker_stuck_handlers(%s, 3)", (worker_id,))])
    assert refused == []
    assert factories.worker(conn, worker_id)["stuck_handlers"] == 2
    with as_role(producer_dsn) as c:  # the producer reads it in the view
        assert c.execute("SELECT stuck_handlers FROM pgq.worker_status WHERE id = %s",
                         (worker_id,)).fetchone() == (2,)


def test_worker_sends_health_samples_and_prunes_them_and_the_producer_may_not(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    worker_dsn, producer_dsn = logins.create(WORKER).dsn, logins.create(PRODUCER).dsn
    worker_id = factories.insert_worker(conn)
    with as_role(worker_dsn) as c:
        beat = c.execute("SELECT status::text FROM pgq.heartbeat_worker_v3(%s, 0, '{}', 0, %s::jsonb)",
                         (worker_id, '{"jobs_completed": 3, "health_score": 0.75}')).fetchone()
        pruned = c.execute("SELECT pgq.prune_health_logs(interval '1 day')").fetchone()
        with factories.raises_sqlstate("42501"):  # still no direct write to the table
            c.execute("DELETE FROM pgq.worker_health_logs")
    refused = denied(producer_dsn, [
        ("SELECT * FROM pgq.heartbeat_worker_v3(%s)", (worker_id,)),
        ("SELECT pgq.prune_health_logs(interval '0')", ()),
    ])
    assert (beat, pruned, refused) == (("active",), (0,), [])
    assert conn.execute("SELECT jobs_completed, health_score FROM pgq.worker_health_logs").fetchall() == [(3, 0.75)]


def test_worker_may_not_enqueue_cancel_repair_or_write_tables(logins: Logins, conn: psycopg.Connection[Any]) -> None:
    dsn = logins.create(WORKER).dsn
    queued = factories.insert_job(conn)
    dead = factories.insert_job(conn, status="dead")
    before = factories.snapshot(conn)

    refused = denied(dsn, [
        ("SELECT pgq.enqueue_job('t')", ()),
        ("SELECT * FROM pgq.enqueue_jobs('{t}', '{\"{}\"}')", ()),
        ("INSERT INTO pgq.jobs (task) VALUES ('t')", ()),
        ("SELECT pgq.cancel_job(%s)", (queued,)),
        ("SELECT * FROM pgq.requeue_dead_jobs(%s)", ([dead],)),
        ("SELECT * FROM pgq.purge_dead_jobs(%s)", ([dead],)),
        ("UPDATE pgq.jobs SET status = 'completed' WHERE id = %s", (queued,)),
        ("DELETE FROM pgq.jobs", ()),
        ("DELETE FROM pgq.workers", ()),
        ("UPDATE pgq.workers SET status = 'stale'", ()),
        ("TRUNCATE pgq.jobs", ()),
        ("DROP TABLE pgq.workers", ()),
        ("SELECT * FROM pgq.dead_letter_queue", ()),
        ("SELECT * FROM pgq.job_executions", ()),
        ("SELECT nextval('pgq.jobs_id_seq')", ()),
        ("CREATE TABLE pgq.mine (x int)", ()),
    ])

    assert refused == []
    assert factories.snapshot(conn) == before
    with pgq.connect(dsn, strict_tasks=False) as q, pytest.raises(pgq.DatabaseError, match="privilege"):
        q.enqueue("t", {})
    assert factories.snapshot(conn) == before


# ---------------------------------------------------------------- Redis accelerator


def test_worker_runs_jobs_in_redis_mode_with_only_the_worker_role(
    logins: Logins, conn: psycopg.Connection[Any], connect: Any, settings: pgq.Settings,
    redis_url: str, redis_prefix: str,
) -> None:
    from pgq.maintenance import Maintenance
    from redis_service import accelerated

    dsn = logins.create(WORKER).dsn
    # The mirror is built; Postgres is polled only every 600 s, so what runs came through Redis.
    fast = accelerated(settings, redis_url, redis_prefix, redis_poll_interval_seconds=600.0)
    with pgq.connect(settings=fast, strict_tasks=False) as owner:
        pushed = [owner.enqueue("w.double", {"n": n}) for n in range(3)]  # pushed to Redis after the commit
    # Enqueued in SQL, never pushed: only the reconciler (run as the worker) can mirror it.
    in_sql = factories.insert_job(conn, task="w.double", payload={"n": 10})
    # The watermark sees another role's open transaction (mirror_horizon runs as its owner).
    other = connect(autocommit=False)
    started = other.execute("SELECT xact_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()[0]
    with as_role(dsn) as c:
        horizon = c.execute("SELECT pgq.mirror_horizon()").fetchone()[0]
    other.rollback()

    q = pgq.connect(settings=fast.replace(database_url=dsn), strict_tasks=False)

    @q.task(name="w.double")
    def double(n: int) -> int:
        return 2 * n

    try:
        report = Maintenance(q.settings, q.pool, q.queries, redis=q.redis).run_once()
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False, concurrency=4)
        worker.run(burst=True)  # pops ids, claims them with claim_jobs, acknowledges, retires
    finally:
        q.close()

    assert horizon <= started
    assert report.leader and report.reconciled is not None and report.reconciled.added == 1
    jobs = [*pushed, in_sql]
    assert factories.statuses(conn, jobs) == dict.fromkeys(jobs, "completed")
    assert [factories.job(conn, j)["result"] for j in jobs] == [0, 2, 4, 20]
    assert worker.counters.extra.get("redis_claimed") == 4 and worker.counters.errors == 0


def test_producer_reads_the_mirror_health_in_status(
    logins: Logins, conn: psycopg.Connection[Any], settings: pgq.Settings, redis_url: str, redis_prefix: str,
) -> None:
    from redis_service import accelerated

    dsn = logins.create(PRODUCER).dsn
    fast = accelerated(settings, redis_url, redis_prefix)
    with pgq.connect(settings=fast.replace(database_url=dsn), strict_tasks=False) as q:
        q.enqueue_many([{"task": "t"}] * 2)
    runner = CliRunner(env={"PGQ_DATABASE_URL": dsn, "PGQ_REDIS_URL": redis_url, "PGQ_REDIS_PREFIX": redis_prefix})
    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    mirror = json.loads(status.output)["redis_mirror"]
    assert mirror["built"] and mirror["queues"]["default"] == {"in_redis": 2, "runnable_in_postgres": 2}
    with as_role(dsn) as c, factories.raises_sqlstate(DENIED):
        c.execute("SELECT * FROM pgq.claim_jobs('{1}', gen_random_uuid())")


# ---------------------------------------------------------------- SECURITY DEFINER safety


def test_definer_functions_ignore_the_callers_search_path_and_temporary_objects(
    logins: Logins, conn: psycopg.Connection[Any],
) -> None:
    dsn = logins.create(PRODUCER).dsn
    with as_role(dsn) as c:
        # Look-alikes a caller can create: a temporary table and function, first in its search_path.
        c.execute("CREATE TEMPORARY TABLE jobs (LIKE pgq.jobs INCLUDING DEFAULTS)")
        c.execute("CREATE FUNCTION pg_temp.enqueue_jobs(text[], jsonb[]) RETURNS TABLE (ord int, job_id bigint,"
                  " created boolean) LANGUAGE sql AS 'SELECT 1, -1::bigint, true'")
        c.execute("SET search_path TO pg_temp, pgq, public")
        job_id = c.execute("SELECT pgq.enqueue_job('hijack.attempt', '{\"a\": 1}', 'q1')").fetchone()
        temp_rows = c.execute("SELECT count(*) FROM pg_temp.jobs").fetchone()
    assert temp_rows == (0,)
    assert job_id is not None and factories.job(conn, job_id[0])["task"] == "hijack.attempt"


# ---------------------------------------------------------------- migrations and roles


def _schema_roles(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, bool]]:
    return conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
                        ([f"{schema}_{kind}" for kind in ("producer", "worker", "viewer", "operator")],)).fetchall()


def test_each_schema_gets_its_own_roles_and_downgrade_drops_them(
    logins: Logins, conn: psycopg.Connection[Any], db_url: str,
) -> None:
    schema = f"pgqr_{uuid.uuid4().hex[:10]}"
    for kind in ("producer", "worker", "viewer", "operator"):
        logins.track(f"{schema}_{kind}")
    settings = pgq.Settings(database_url=db_url, schema=schema)
    upgrade(settings)
    assert _schema_roles(conn, schema) == [(f"{schema}_{kind}", False)
                                           for kind in ("operator", "producer", "viewer", "worker")]
    # A producer of this schema is no producer of schema pgq.
    dsn = logins.create(f"{schema}_producer").dsn
    with as_role(dsn) as c:
        c.execute(sql.SQL("SELECT {}.enqueue_job('t')").format(sql.Identifier(schema)))
        with factories.raises_sqlstate(DENIED):
            c.execute("SELECT pgq.enqueue_job('t')")
    at_head = dump(conn, schema)

    downgrade(settings, "0002")

    assert _schema_roles(conn, schema) == []  # the login role's membership went with them
    invokers = conn.execute(
        "SELECT count(*) FILTER (WHERE p.prosecdef), count(*) FILTER (WHERE NOT EXISTS ("
        "  SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a WHERE a.grantee = 0))"
        " FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = %s",
        (schema,)).fetchone()
    assert invokers == (0, 0)  # SECURITY INVOKER again, and every function executable by PUBLIC again
    assert not conn.execute("SELECT count(*) FROM pg_constraint WHERE conname IN"
                            " ('jobs_run_at_finite', 'jobs_payload_size', 'workers_queue_names')"
                            " AND connamespace = %s::regnamespace", (schema,)).fetchone()[0]

    upgrade(settings)
    assert dump(conn, schema) == at_head


def test_downgrade_keeps_roles_that_other_databases_still_use(conn: psycopg.Connection[Any],
                                                               settings: pgq.Settings) -> None:
    # The session's template database (and every other clone) grants pgq_producer
    # and pgq_worker privileges, so a downgrade here may only revoke its own.
    at_head = dump(conn, "pgq")
    downgrade(settings, "0002")

    assert _schema_roles(conn, "pgq") == [(OPERATOR, False), (PRODUCER, False), (VIEWER, False), (WORKER, False)]
    for role in (PRODUCER, WORKER, VIEWER, OPERATOR):
        assert conn.execute(_DIRECT_GRANTS, {"role": role}).fetchall() == []
    assert "pgq_producer" not in dump(conn, "pgq")

    upgrade(settings)
    assert dump(conn, "pgq") == at_head
    assert conn.execute("SELECT version_num FROM pgq.alembic_version").fetchone() == (head_revision(),)


def test_a_migrating_role_that_may_not_create_roles_is_warned_and_a_dba_finishes_the_job(
    logins: Logins, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    schema = f"pgqr_{uuid.uuid4().hex[:10]}"
    for kind in ("producer", "worker", "viewer", "operator"):
        logins.track(f"{schema}_{kind}")
    owner = logins.create(options="NOCREATEROLE")
    owner_dsn = owner.dsn
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database),
                                                                     sql.Identifier(owner.name)))
    warnings: list[str] = []
    settings = pgq.Settings(database_url=owner_dsn, schema=schema)

    with caplog.at_level(logging.WARNING, logger="pgq.migrate"):
        upgrade(settings)  # succeeds: the roles are skipped with a warning

    assert _schema_roles(conn, schema) == []
    said = [r.getMessage() for r in caplog.records if r.name == "pgq.migrate"]
    # Revision 0003 for each role, 0004 for the worker role's Redis functions, then 0005
    # for the worker's prune_workers and the producer's job_status_estimates, then 0006
    # for the worker's claim-path functions, then 0007 for its set_worker_stuck_handlers,
    # then 0008 for the producer's health_alerts and the worker's heartbeat_worker_v3,
    # then 0009 for the producer's enqueue_jobs_v2 / enqueue_job_v2, then 0010 for each
    # role (pausing: the producer's functions, both roles' queue_pauses; then the schedules),
    # then 0011 for the worker's snapshot functions, then 0012 for each role (claim rules),
    # then 0013 for the worker's evacuate_worker, then 0014 for each role (collect_metrics),
    # then 0015 for the dashboard's viewer and operator.
    assert len(said) == 22 and all("CREATE ROLE" in m for m in said), said
    assert all("may not create roles" in m for m in said[:2]) and "roles/002.sql" in said[2], said
    assert all("003.sql" in m for m in said[3:5]), said
    assert "004.sql" in said[5], said
    assert "005.sql" in said[6], said
    assert all("006.sql" in m for m in said[7:9]), said
    assert "007.sql" in said[9] and "enqueue_jobs_v2" in said[9], said
    assert all("008.sql" in m for m in said[10:12]), said
    assert all("009.sql" in m for m in said[12:14]), said
    assert "010.sql" in said[14], said
    assert all("011.sql" in m for m in said[15:17]), said
    assert "012.sql" in said[17], said
    assert all("013.sql" in m and "collect_metrics" in m for m in said[18:20]), said
    assert all("may not create roles" in m and "014.sql" in m for m in said[20:22]), said
    assert conn.execute(sql.SQL("SELECT version_num FROM {}.alembic_version").format(
        sql.Identifier(schema))).fetchone() == (head_revision(),)
    # The DBA creates the roles, and the owner runs the (idempotent) file again.
    for kind in ("producer", "worker", "viewer", "operator"):
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(f"{schema}_{kind}")))
    with as_role(owner_dsn) as c:
        c.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
        c.execute(sql.SQL("SET search_path TO {}, pg_catalog, pg_temp").format(sql.Identifier(schema)))
        c.execute(read_sql("roles/001.sql"))
        c.execute(read_sql("roles/002.sql"))
        c.execute(read_sql("roles/003.sql"))
        c.execute(read_sql("roles/004.sql"))
        c.execute(read_sql("roles/005.sql"))
        c.execute(read_sql("roles/006.sql"))
        c.execute(read_sql("roles/007.sql"))
        c.execute(read_sql("roles/008.sql"))
        c.execute(read_sql("roles/009.sql"))
        c.execute(read_sql("roles/010.sql"))
        c.execute(read_sql("roles/011.sql"))
        c.execute(read_sql("roles/012.sql"))
        c.execute(read_sql("roles/013.sql"))
        c.execute(read_sql("roles/014.sql"))
    producer = logins.create(f"{schema}_producer").dsn
    with as_role(producer) as c:
        job = c.execute(sql.SQL("SELECT {}.enqueue_job('t')").format(sql.Identifier(schema))).fetchone()
        assert job is not None
        child = c.execute(sql.SQL("SELECT {}.enqueue_job_v2('t', p_depends_on => ARRAY[%s::bigint])").format(
            sql.Identifier(schema)), [job[0]]).fetchone()
        assert child is not None and child[0] > job[0]
        c.execute(sql.SQL("SELECT * FROM {}.job_status_estimates").format(sql.Identifier(schema)))
        assert c.execute(sql.SQL("SELECT {}.pause_queue('q')").format(sql.Identifier(schema))).fetchone() == (True,)
        # Revision 0014: the queue exporter's read, and a traced enqueue's column.
        c.execute(sql.SQL("SELECT * FROM {}.collect_metrics()").format(sql.Identifier(schema)))
        c.execute(sql.SQL("INSERT INTO {}.jobs (task, trace_context) VALUES ('t', '{{}}')").format(sql.Identifier(schema)))
    assert job is not None
    worker = logins.create(f"{schema}_worker").dsn
    with as_role(worker) as c:
        assert c.execute(sql.SQL("SELECT {}.mirror_horizon()").format(sql.Identifier(schema))).fetchone()
        assert c.execute(sql.SQL("SELECT {}.prune_workers(interval '1 day')").format(
            sql.Identifier(schema))).fetchone() == (0,)
        with factories.raises_sqlstate("PQ002", match="not registered"):  # allowed to call it, and it answers
            c.execute(sql.SQL("SELECT {}.drain_worker(gen_random_uuid())").format(sql.Identifier(schema)))
        with factories.raises_sqlstate("PQ002", match="not registered"):
            c.execute(sql.SQL("SELECT {}.set_worker_stuck_handlers(gen_random_uuid(), 1)").format(
                sql.Identifier(schema)))
        assert c.execute(sql.SQL("SELECT {}.prune_snapshots(interval '1 day')").format(
            sql.Identifier(schema))).fetchone() == (0,)
        assert c.execute(sql.SQL("SELECT {}.prune_health_logs(interval '1 day')").format(
            sql.Identifier(schema))).fetchone() == (0,)
        assert c.execute(sql.SQL("SELECT count(*) FROM {}.collect_metrics() WHERE metric = 'workers'").format(
            sql.Identifier(schema))).fetchone() == (4,)
    viewer = logins.create(f"{schema}_viewer").dsn
    with as_role(viewer) as c:
        assert c.execute(sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(schema))).fetchone() == (3,)
    assert warnings == []  # nothing skipped the second time


def test_role_names_longer_than_63_bytes_are_refused(conn: psycopg.Connection[Any]) -> None:
    # Settings allow 40-character schema names; the file itself checks, for DBAs running it by hand.
    long_schema = "s" * 60
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(long_schema)))
    conn.execute(sql.SQL("SET search_path TO {}, pg_catalog, pg_temp").format(sql.Identifier(long_schema)))
    with factories.raises_sqlstate("PQ004", match="longer than 63 bytes"):
        conn.execute(read_sql("roles/001.sql"))
    assert not role_exists(conn, (long_schema + "_producer")[:63])


# ---------------------------------------------------------------- AUTO snapshots (revision 0011)


def test_the_worker_role_takes_auto_snapshots_and_applies_retention(
    conn: psycopg.Connection[Any], logins: Logins
) -> None:
    from pgq.snapshots.auto import AutoSnapshots

    factories.insert_job(conn)
    worker = logins.create(WORKER).dsn
    settings = pgq.Settings(database_url=worker, snapshot_interval_seconds=60)
    with as_role(worker) as c:
        report = AutoSnapshots(settings).run_once(c)
        refused = denied(worker, [("DELETE FROM pgq.state_snapshots", ()),
                                  ("UPDATE pgq.state_snapshots SET origin = 'manual'", ())])
    assert report.taken is not None and report.taken.kind == "FULL"
    assert conn.execute("SELECT origin FROM pgq.state_snapshots").fetchall() == [("auto",)]
    assert refused == []
