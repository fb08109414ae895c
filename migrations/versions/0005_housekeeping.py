"""Housekeeping: indexes that serve pruning, purging, requeueing, the dead
letter cascade and queue_stats; bounded purge; worker pruning; a job's lives;
comments on every function.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Indexes (each with its reason next to it below):

- ``dead_letter_queue_job_idx``: deleting a job (pruning, purging) cascades to
  its dead letters, and both existing indexes of ``dead_letter_queue`` are
  partial, so each deleted job scanned the whole dead letter queue.
- ``jobs_finished_idx`` (finished_at of completed and cancelled jobs) replaces
  ``jobs_finished_at_brin``: prune_jobs reads its batch in index order instead
  of sorting every finished job. Built with ``IF NOT EXISTS``, so a DBA with a
  large table can build it beforehand without blocking writes (README, "For
  DBAs").
- ``jobs_dead_idx``, ``jobs_dead_unique_key_idx``, ``jobs_waiting_idx``: dead
  and waiting jobs for purge_dead_jobs, bulk requeue (its unique-key check)
  and queue_stats. They cost an index write only when a job dies or waits.

Columns: ``jobs.life`` and ``job_executions.life``. A job requeued from the
dead letter queue starts a new life (life + 1) with attempts from 1 again; an
execution row says which life it belongs to, so a job's history no longer
mixes two runs. Existing rows are numbered from the dead letters' requeued_at.
``job_executions.life`` has no default: a statement that records an attempt
must say which life it belongs to.

Functions: new files for prune_jobs, purge_dead_jobs (at most 10,000 jobs a
call; same signature, so grants on it survive), requeue_dead_jobs (new life, cleared
last_error, indexed unique-key check), record_failed_attempt, complete_jobs,
cancel_job (they write the life); a new prune_workers. Views: queue_stats
reads only partial indexes (completed and cancelled jobs leave it),
job_history gains ``life``, job_status_estimates is new. ``db/comments/001.sql``
comments the functions not replaced here. Roles: ``db/roles/003.sql``.

Downgrade runs the previous files, restores the BRIN index and the comments,
and drops the rest.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA_CHANGES = r"""
-- ------------------------------------------------------------- a job's lives
ALTER TABLE jobs ADD COLUMN life integer NOT NULL DEFAULT 1;
ALTER TABLE job_executions ADD COLUMN life integer NOT NULL DEFAULT 1;
-- Rows of jobs requeued before this revision: one life per closed dead letter,
-- an attempt in the life its start falls in.
UPDATE jobs AS j SET life = 1 + r.requeues
FROM (SELECT job_id, count(*) AS requeues FROM dead_letter_queue
      WHERE requeued_at IS NOT NULL GROUP BY job_id) AS r
WHERE j.id = r.job_id;
UPDATE job_executions AS e
SET life = 1 + (SELECT count(*) FROM dead_letter_queue AS d
                WHERE d.job_id = e.job_id AND d.requeued_at IS NOT NULL AND d.requeued_at <= e.started_at)
WHERE e.job_id IN (SELECT job_id FROM dead_letter_queue WHERE requeued_at IS NOT NULL);
-- From now on whoever records an attempt names its life.
ALTER TABLE job_executions ALTER COLUMN life DROP DEFAULT;

COMMENT ON COLUMN jobs.life IS
    'Life of the job: 1, plus 1 for each requeue from the dead letter queue (a new life starts with attempts 0).';
COMMENT ON COLUMN jobs.attempts IS 'Attempts started so far in the current life, including the running one.';
COMMENT ON COLUMN jobs.last_error IS
    'Error type and message of the last failed attempt of the current life (a requeue clears it).';
COMMENT ON COLUMN job_executions.life IS 'Life of the job the attempt belongs to (jobs.life when it ran).';
COMMENT ON COLUMN job_executions.attempt IS 'Attempt number within its life, from 1.';

-- ------------------------------------------------------------- indexes
-- Deleting a job (prune_jobs, purge_dead_jobs) deletes its dead letters by ON
-- DELETE CASCADE, which looks them up by job_id: without a plain index on it
-- (the two below are partial) every deleted job scanned the dead letter queue.
-- dead_letter_queue_open_job_idx stays: it is the rule "one open dead letter
-- per job", and costs a write only when a job dies.
CREATE INDEX dead_letter_queue_job_idx ON dead_letter_queue (job_id);

-- Retention pruning: prune_jobs deletes completed and cancelled jobs oldest
-- first, in batches; each batch is a range at the start of this index (no sort
-- of the whole backlog, no scan of live rows). It replaces the BRIN index on
-- finished_at, which could not give an order: one btree write per finished job
-- instead of a BRIN probe on every insert and update of a row.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON jobs (finished_at)
    WHERE status IN ('completed', 'cancelled');
DROP INDEX jobs_finished_at_brin;

-- Dead jobs: purge_dead_jobs (oldest first), the bulk requeue, queue_stats.
-- Written only when a job dies.
CREATE INDEX jobs_dead_idx ON jobs (finished_at) WHERE status = 'dead';
-- Bulk requeue leaves dead a job whose unique key a newer dead job holds: one
-- probe here per keyed dead job (jobs_unique_key_idx answers for live holders).
CREATE INDEX jobs_dead_unique_key_idx ON jobs (unique_key, id)
    WHERE status = 'dead' AND unique_key IS NOT NULL;
-- Waiting jobs (they wait for parents) for queue_stats; written only for them.
CREATE INDEX jobs_waiting_idx ON jobs (queue) WHERE status = 'waiting';
"""

FILES = [
    "functions/purge_dead_jobs/002.sql",
    "functions/record_failed_attempt/002.sql",
    "functions/complete_jobs/002.sql",
    "functions/cancel_job/002.sql",
    "functions/prune_jobs/002.sql",
    "functions/requeue_dead_jobs/002.sql",
    "functions/prune_workers/001.sql",
    "views/queue_stats/002.sql",
    "views/job_history/002.sql",
    "views/job_status_estimates/001.sql",
    "comments/001.sql",
    "roles/003.sql",
]

REVERT_SCHEMA = r"""
DROP INDEX jobs_waiting_idx;
DROP INDEX jobs_dead_unique_key_idx;
DROP INDEX jobs_dead_idx;
CREATE INDEX jobs_finished_at_brin ON jobs USING brin (finished_at);
DROP INDEX jobs_finished_idx;
DROP INDEX dead_letter_queue_job_idx;

ALTER TABLE job_executions DROP COLUMN life;
ALTER TABLE jobs DROP COLUMN life;
COMMENT ON COLUMN jobs.attempts IS 'Attempts started so far, including the running one.';
COMMENT ON COLUMN jobs.last_error IS 'Error type and message of the last failed attempt.';
COMMENT ON COLUMN job_executions.attempt IS
    'Attempt number, from 1 (from 1 again after the job was requeued from the dead letter queue).';
"""

# Revision 0004 had no comment on any function: remove them all (those of the
# functions restored from their 001 files survive CREATE OR REPLACE).
UNCOMMENT_FUNCTIONS = r"""
DO $uncomment$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_proc AS p
        WHERE p.pronamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('COMMENT ON FUNCTION %s IS NULL', v_function);
    END LOOP;
END
$uncomment$;
"""

REGRANT_JOB_HISTORY = r"""
DO $roles$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_schema() || '_producer') THEN
        EXECUTE format('GRANT SELECT ON job_history TO %I', current_schema() || '_producer');
    END IF;
END
$roles$;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(SCHEMA_CHANGES)
    for name in FILES:
        run_sql_file(name)


def downgrade() -> None:
    enter_schema()
    op.execute("DROP VIEW job_status_estimates")
    # job_history loses a column: it cannot be replaced in place.
    op.execute("DROP VIEW job_history")
    run_sql_file("views/job_history/001.sql")
    op.execute(REGRANT_JOB_HISTORY)
    run_sql_file("views/queue_stats/001.sql")
    op.execute("DROP FUNCTION prune_workers(interval, integer, timestamptz)")
    for name in ("record_failed_attempt", "complete_jobs", "cancel_job", "prune_jobs", "requeue_dead_jobs",
                 "purge_dead_jobs"):
        run_sql_file(f"functions/{name}/001.sql")
    for signature in (
        "complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz)",
        "cancel_job(bigint, timestamptz)",
        "prune_jobs(interval, integer, timestamptz)",
        "requeue_dead_jobs(bigint[], text, timestamptz)",
        "purge_dead_jobs(bigint[], interval, timestamptz)",
    ):
        op.execute(f"ALTER FUNCTION {signature} SECURITY DEFINER")
    op.execute(UNCOMMENT_FUNCTIONS)
    op.execute(REVERT_SCHEMA)
