"""Job graphs: enqueue with parents, release in the completing transaction, priority inheritance.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02

Issue 10, items 1-2 (SPEC §7). ``job_dependencies`` (revision 0001) gets its writers:

- Column ``jobs.effective_priority`` (smallint, NULL = the job's own priority: a
  catalog-only change, no table rewrite): the priority lent by waiting descendants.
- Functions ``enqueue_jobs_v2`` / ``enqueue_job_v2`` (enqueue with parents, beside
  ``enqueue_jobs`` / ``enqueue_job``, which stay), the internal helpers
  ``release_waiting_children`` and ``lend_priority``, and ``complete_jobs``
  (``003.sql``: releases the waiting children of the jobs it completes).
- Failure propagation: ``cancel_waiting_descendants`` (internal), called by
  ``record_failed_attempt`` (``003.sql``, a job that ends dead) and ``cancel_job``
  (``003.sql``): the waiting descendants are cancelled, the reason in last_error;
  ``requeue_dead_jobs_v2`` (``p_with_dependents``) brings them back to waiting.
- View ``job_blockers``: why a job is not running, and the parents it waits on.
- Roles: ``db/roles/007.sql``.

The downgrade restores ``complete_jobs/002.sql``, ``cancel_job/002.sql`` (definer
again) and ``record_failed_attempt/002.sql``, drops the new
functions and the column. Waiting jobs stay waiting (nothing releases them
after a downgrade: requeue or cancel them first).
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = """
ALTER TABLE jobs
    ADD COLUMN effective_priority smallint,
    ADD CONSTRAINT jobs_effective_priority_range CHECK (effective_priority BETWEEN 1 AND 5);
COMMENT ON COLUMN jobs.effective_priority IS
    'Priority lent by waiting descendants (priority inheritance, lend_priority): above priority when a '
    'waiting job of higher priority depends on this one; NULL = none lent. The claim does not read it yet.';
"""

DROPS = """
DROP VIEW job_blockers;
DROP FUNCTION enqueue_job_v2(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                             bigint[], timestamptz);
DROP FUNCTION enqueue_jobs_v2(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                              text[], double precision[], double precision[], double precision[],
                              double precision[], integer[], bigint[], integer[], timestamptz);
DROP FUNCTION release_waiting_children(bigint[], timestamptz);
DROP FUNCTION lend_priority(bigint[]);
DROP FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz);
DROP FUNCTION cancel_waiting_descendants(bigint, timestamptz);
ALTER TABLE jobs DROP COLUMN effective_priority;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(COLUMNS)
    run_sql_file("functions/lend_priority/001.sql")
    run_sql_file("functions/release_waiting_children/001.sql")
    run_sql_file("functions/enqueue_jobs_v2/001.sql")
    run_sql_file("functions/enqueue_job_v2/001.sql")
    run_sql_file("functions/complete_jobs/003.sql")
    run_sql_file("functions/cancel_waiting_descendants/001.sql")
    run_sql_file("functions/record_failed_attempt/003.sql")
    run_sql_file("functions/cancel_job/003.sql")
    run_sql_file("functions/requeue_dead_jobs_v2/001.sql")
    run_sql_file("views/job_blockers/001.sql")
    run_sql_file("roles/007.sql")


def downgrade() -> None:
    enter_schema()
    run_sql_file("functions/complete_jobs/002.sql")
    op.execute("ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER")
    run_sql_file("functions/record_failed_attempt/002.sql")
    run_sql_file("functions/cancel_job/002.sql")
    op.execute("ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER")
    op.execute(DROPS)
