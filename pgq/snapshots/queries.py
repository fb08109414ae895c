"""The statements of pgq.snapshots, built once per schema.

Capture reads with COPY TO inside one REPEATABLE READ transaction; restore
writes with COPY FROM into temporary tables and applies them with set-based
statements. Column lists come from ``format`` (constant names); the schema is
quoted by psycopg; every value is a bound parameter.
"""

from __future__ import annotations

from pgq.db import quote_ident
from pgq.snapshots.format import EDGE_COLUMNS, JOB_COLUMNS, LIVE_STATUSES, WORKER_COLUMNS

_LIVE = "(" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"
INFO_COLUMNS = ("id, snapshot_type, origin, created_at, base_snapshot_id, full_snapshot_id, format_version, "
                "schema_revision, db_snapshot, body_sha256, octet_length(body), metadata")


def _cols(columns: tuple[str, ...], alias: str = "") -> str:
    return ", ".join(f"{alias}{c}" for c in columns)


class SnapshotQueries:
    """Statements for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self.schema = schema
        self.lock_key = f"pgq.snapshots:{schema}"
        # Serialises snapshot creation per schema (a session lock, taken before the
        # REPEATABLE READ transaction starts: see capture.create).
        self.lock = "SELECT pg_advisory_lock(hashtext(%s))"
        self.unlock = "SELECT pg_advisory_unlock(hashtext(%s))"
        # AUTO: skip when another session is taking one; also the time the decision uses.
        self.try_lock = "SELECT pg_try_advisory_lock(hashtext(%s)), coalesce(%s, now())"
        self.repeatable_read = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
        # COPY text depends on these: pin them so a body reads back the same anywhere. JIT off:
        # compiling the restore plan's expressions cost more than running them (0.4 s of 0.8 s).
        self.text_settings = ("SELECT set_config('timezone', 'UTC', true), set_config('datestyle', 'ISO, YMD', true),"
                              " set_config('intervalstyle', 'postgres', true), set_config('extra_float_digits', '1', true),"
                              " set_config('jit', 'off', true)")
        self.revision = f"SELECT version_num FROM {s}.alembic_version"
        self.revision_exists = "SELECT to_regclass(%s) IS NOT NULL"
        # The first statement of a capture (it fixes the MVCC snapshot): its time, which
        # transactions it sees, the change counter, and the jobs per status (the COPY that
        # follows sees the same rows, so the jobs section's count is known before it streams).
        self.facts = ("SELECT now(), pg_current_snapshot()::text,"
                      " (SELECT coalesce(n_tup_ins + n_tup_upd + n_tup_del, 0) FROM pg_stat_user_tables"
                      "  WHERE relid = to_regclass(%s)),"
                      " (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM"
                      f"  (SELECT status::text AS status, count(*) AS n FROM {s}.jobs WHERE status IN {_LIVE} GROUP BY 1) AS c)")
        self.changes = ("SELECT coalesce(n_tup_ins + n_tup_upd + n_tup_del, 0) FROM pg_stat_user_tables"
                        " WHERE relid = to_regclass(%s)")
        self.jobs_table = f"{s}.jobs"
        self.version_table = f"{s}.alembic_version"
        self.copy_out = {
            "jobs": f"COPY (SELECT {_cols(JOB_COLUMNS)} FROM {s}.jobs WHERE status IN {_LIVE}) TO STDOUT",
            # Edges between jobs the snapshot holds (an edge to a finished parent is settled).
            "edges": (f"COPY (SELECT {_cols(EDGE_COLUMNS, 'd.')} FROM {s}.job_dependencies AS d"
                      f" JOIN {s}.jobs AS p ON p.id = d.parent_id JOIN {s}.jobs AS c ON c.id = d.child_id"
                      f" WHERE p.status IN {_LIVE} AND c.status IN {_LIVE}) TO STDOUT"),
            "workers": f"COPY (SELECT {_cols(WORKER_COLUMNS)} FROM {s}.workers) TO STDOUT",
        }
        self.save = f"SELECT {s}.save_snapshot(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
        self.latest_local = (f"SELECT {INFO_COLUMNS} FROM {s}.state_snapshots WHERE origin <> 'import'"
                             " ORDER BY created_at DESC, id DESC LIMIT 1")
        self.local_at = (f"SELECT {INFO_COLUMNS} FROM {s}.state_snapshots WHERE origin <> 'import'"
                         " AND created_at <= %s ORDER BY created_at DESC, id DESC LIMIT 1")
        self.first_full = (f"SELECT min(created_at) FROM {s}.state_snapshots WHERE origin <> 'import'"
                           " AND snapshot_type = 'FULL'")
        self.list = f"SELECT {INFO_COLUMNS} FROM {s}.state_snapshots ORDER BY created_at, id"
        self.get = f"SELECT {INFO_COLUMNS} FROM {s}.state_snapshots WHERE id = %s"
        self.chain = (f"SELECT {INFO_COLUMNS}, body FROM {s}.state_snapshots"
                      " WHERE id = %s OR full_snapshot_id = %s")
        self.body = f"SELECT body FROM {s}.state_snapshots WHERE id = %s"
        self.prune = f"SELECT {s}.prune_snapshots(%s * interval '1 second', coalesce(%s, now()))"
        self.restore = RestoreStatements(s)


class RestoreStatements:
    """The statements of one restore (temporary tables live until its commit)."""

    def __init__(self, s: str) -> None:
        self.temp = [
            f"CREATE TEMP TABLE pgq_restore_jobs (LIKE {s}.jobs) ON COMMIT DROP",
            f"CREATE TEMP TABLE pgq_restore_edges (LIKE {s}.job_dependencies) ON COMMIT DROP",
            f"CREATE TEMP TABLE pgq_restore_workers (LIKE {s}.workers) ON COMMIT DROP",
        ]
        self.copy_in = {
            "jobs": f"COPY pgq_restore_jobs ({_cols(JOB_COLUMNS)}) FROM STDIN",
            "edges": f"COPY pgq_restore_edges ({_cols(EDGE_COLUMNS)}) FROM STDIN",
            "workers": f"COPY pgq_restore_workers ({_cols(WORKER_COLUMNS)}) FROM STDIN",
        }
        # Statistics for the plan's joins (a temporary table has none until analysed).
        self.analyze = "ANALYZE pgq_restore_jobs, pgq_restore_workers"
        # New enqueues must not draw an id a restored job holds: moved before the plan
        # (setval is not transactional: a rolled-back restore leaves a gap, nothing worse).
        self.sequence = (f"SELECT setval(pg_get_serial_sequence('{s}.jobs', 'id'), m) FROM"
                         " (SELECT max(id) AS m FROM pgq_restore_jobs) AS x"
                         f" WHERE m >= (SELECT last_value FROM {s}.jobs_id_seq)")
        # One action per snapshot job. Order matters: identical rows are left alone;
        # a job running here is its worker's (never overwritten); then the policy;
        # then the unique key (never a second live job per key).
        plan_select = f"""
            SELECT r.id, j.status::text AS current_status, r.status::text AS snapshot_status,
                CASE
                    WHEN j.id IS NOT NULL AND ROW(j.*) IS NOT DISTINCT FROM ROW(r.*) THEN 'same'
                    WHEN j.status = 'running' THEN 'keep_running'
                    WHEN j.id IS NOT NULL AND %(policy)s::text = 'skip' THEN 'keep'
                    WHEN j.id IS NOT NULL AND %(policy)s::text = 'newest' AND j.updated_at >= r.updated_at THEN 'keep'
                    WHEN r.unique_key IS NOT NULL AND EXISTS (
                        SELECT 1 FROM {s}.jobs AS o WHERE o.unique_key = r.unique_key AND o.id <> r.id
                        AND o.status IN {_LIVE}) THEN 'blocked'
                    WHEN j.id IS NULL THEN 'insert'
                    ELSE 'overwrite'
                END AS action
            FROM pgq_restore_jobs AS r LEFT JOIN {s}.jobs AS j ON j.id = r.id"""
        self.plan = f"CREATE TEMP TABLE pgq_restore_plan ON COMMIT DROP AS {plan_select}"
        # No table lock: the rows to overwrite are locked (in id order), then planned again,
        # now that nobody can change them (a claim that committed meanwhile makes one
        # keep_running). Rows kept, same or running here are never written, so need no lock.
        self.lock_overwrites = f"""
            SELECT j.id FROM {s}.jobs AS j JOIN pgq_restore_plan AS p ON p.id = j.id
            WHERE p.action = 'overwrite' ORDER BY j.id FOR UPDATE OF j"""
        self.replan = f"""
            WITH again AS ({plan_select}
                WHERE r.id IN (SELECT id FROM pgq_restore_plan WHERE action = 'overwrite'))
            UPDATE pgq_restore_plan AS p SET action = a.action, current_status = a.current_status
            FROM again AS a WHERE a.id = p.id AND a.action IS DISTINCT FROM p.action"""
        self.plan_rows = "SELECT id, action, current_status, snapshot_status FROM pgq_restore_plan ORDER BY id"
        # Jobs running at snapshot time come back runnable. Their attempt counts, as a
        # rescue's does, unless the snapshot's own worker row shows the handler had not
        # started (claim position above the worker's started_through) and free rescues
        # are left; an attempt that counts is recorded as an 'interrupted' execution.
        self.unstarted = """
            CREATE TEMP TABLE pgq_restore_unstarted ON COMMIT DROP AS
            SELECT r.id, r.attempts, r.worker_id, r.started_at, r.life,
                   coalesce(r.claim_position > w.started_through AND r.free_rescues < r.max_attempts,
                            false) AS unstarted  -- no claim position, or no worker row: it counts
            FROM pgq_restore_jobs AS r JOIN pgq_restore_plan AS p ON p.id = r.id
            LEFT JOIN pgq_restore_workers AS w ON w.id = r.worker_id
            WHERE r.status = 'running' AND p.action IN ('insert', 'overwrite')"""
        # After the inserts: only for jobs the restore did write (insert or overwrite).
        self.interrupted_executions = f"""
            INSERT INTO {s}.job_executions (job_id, attempt, worker_id, started_at, finished_at, outcome,
                                            error_type, error_message, life)
            SELECT u.id, u.attempts, u.worker_id, u.started_at, greatest(u.started_at, %(taken_at)s), 'interrupted',
                   'SnapshotRestore', 'running when snapshot ' || %(snapshot)s || ' was taken; restored as queued',
                   u.life
            FROM pgq_restore_unstarted AS u JOIN pgq_restore_plan AS p ON p.id = u.id
            WHERE NOT u.unstarted AND p.action IN ('insert', 'overwrite')"""
        self.requeued_count = """
            SELECT count(*) FROM pgq_restore_unstarted AS u JOIN pgq_restore_plan AS p ON p.id = u.id
            WHERE p.action IN ('insert', 'overwrite')"""
        self.planned_inserts = "SELECT count(*) FROM pgq_restore_plan WHERE action = 'insert'"
        self.requeue_running = """
            UPDATE pgq_restore_jobs AS r
            SET status = 'queued', run_at = %(now)s, updated_at = %(now)s, claim_position = NULL,
                attempts = CASE WHEN u.unstarted THEN r.attempts - 1 ELSE least(r.attempts, r.max_attempts - 1) END,
                free_rescues = r.free_rescues + CASE WHEN u.unstarted THEN 1 ELSE 0 END,
                started_at = CASE WHEN u.unstarted THEN NULL ELSE r.started_at END
            FROM pgq_restore_unstarted AS u WHERE u.id = r.id"""
        # An overwritten dead job leaves the dead letter queue, as a requeue does.
        self.close_dead_letters = f"""
            UPDATE {s}.dead_letter_queue AS d SET requeued_at = %(now)s
            FROM pgq_restore_plan AS p
            WHERE p.action = 'overwrite' AND p.current_status = 'dead' AND d.job_id = p.id AND d.requeued_at IS NULL"""
        assignments = ", ".join(f"{c} = r.{c}" for c in JOB_COLUMNS if c != "id")
        self.overwrite = f"""
            UPDATE {s}.jobs AS j SET {assignments}
            FROM pgq_restore_jobs AS r JOIN pgq_restore_plan AS p ON p.id = r.id
            WHERE p.action = 'overwrite' AND j.id = r.id"""
        self.insert = f"""
            INSERT INTO {s}.jobs ({_cols(JOB_COLUMNS)})
            SELECT {_cols(JOB_COLUMNS, 'r.')} FROM pgq_restore_jobs AS r JOIN pgq_restore_plan AS p ON p.id = r.id
            WHERE p.action = 'insert' ORDER BY r.id
            ON CONFLICT DO NOTHING"""
        # An insert that met a row committed after the plan (a live job with its unique key,
        # enqueued meanwhile) did nothing: it is blocked. Run only when the insert's row count
        # says so; a row the restore wrote is the staged row, column for column.
        self.blocked_at_insert = f"""
            UPDATE pgq_restore_plan AS p SET action = 'blocked'
            FROM pgq_restore_jobs AS r
            WHERE p.action = 'insert' AND r.id = p.id AND NOT EXISTS (
                SELECT 1 FROM {s}.jobs AS j WHERE j.id = r.id
                AND ({_cols(JOB_COLUMNS, 'j.')}) IS NOT DISTINCT FROM ({_cols(JOB_COLUMNS, 'r.')}))"""
        self.edges = f"""
            INSERT INTO {s}.job_dependencies ({_cols(EDGE_COLUMNS)})
            SELECT {_cols(EDGE_COLUMNS, 'e.')} FROM pgq_restore_edges AS e
            WHERE EXISTS (SELECT 1 FROM {s}.jobs AS p WHERE p.id = e.parent_id)
              AND EXISTS (SELECT 1 FROM {s}.jobs AS c WHERE c.id = e.child_id)
            ON CONFLICT DO NOTHING"""
        # A restored worker row is history: the process it names is not running here.
        worker_values = ", ".join(
            "CASE WHEN w.status IN ('active', 'draining') THEN 'stopped'::" + s + ".worker_status_enum ELSE w.status END"
            if c == "status" else
            "coalesce(w.stopped_at, %(taken_at)s)" if c == "stopped_at" else
            "0" if c == "current_load" else f"w.{c}"
            for c in WORKER_COLUMNS)
        self.workers = f"""
            INSERT INTO {s}.workers ({_cols(WORKER_COLUMNS)})
            SELECT {worker_values} FROM pgq_restore_workers AS w
            ON CONFLICT (id) DO NOTHING"""
