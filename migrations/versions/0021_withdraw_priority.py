"""Priority inheritance, withdrawn: a cancelled lender no longer lifts its ancestors (issue 10, item 2).

Revision ID: 0021
Revises: 0014
Create Date: 2026-12-03

- Function ``withdraw_priority`` (``db/functions/withdraw_priority/001.sql``):
  the reverse of ``lend_priority``; recomputes, only ever lowering, the
  effective priority of the unfinished ancestors a job lent to.
- ``cancel_job`` (004) calls it when it cancels a waiting job;
  ``cancel_waiting_descendants`` (002) for the descendants it cancels;
  ``requeue_dead_jobs_v2`` (002) lends again from the descendants it restores.
- The comment of ``jobs.effective_priority`` says what sets it now (the claim
  has read it since revision 0012).
- Roles: ``db/roles/020.sql``.

The downgrade restores the previous bodies and drops the function.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0021"
down_revision = "0014"
branch_labels = None
depends_on = None

COMMENT = """
COMMENT ON COLUMN jobs.effective_priority IS
    'The priority the claim orders by, with priority: greatest(priority, effective_priority). Raised by waiting '
    'descendants of higher priority (lend_priority; withdrawn when they are cancelled, withdraw_priority) and by '
    'aging (age_jobs); NULL = not raised.';
"""
OLD_COMMENT = """
COMMENT ON COLUMN jobs.effective_priority IS
    'Priority lent by waiting descendants (priority inheritance, lend_priority): above priority when a waiting job '
    'of higher priority depends on this one; NULL = none lent. The claim does not read it yet.';
"""


def upgrade() -> None:
    enter_schema()
    run_sql_file("functions/withdraw_priority/001.sql")
    run_sql_file("functions/cancel_waiting_descendants/002.sql")
    run_sql_file("functions/cancel_job/004.sql")
    run_sql_file("functions/requeue_dead_jobs_v2/002.sql")
    op.execute(COMMENT)
    run_sql_file("roles/020.sql")


def downgrade() -> None:
    enter_schema()
    run_sql_file("functions/requeue_dead_jobs_v2/001.sql")
    run_sql_file("functions/cancel_job/003.sql")
    run_sql_file("functions/cancel_waiting_descendants/001.sql")
    op.execute("DROP FUNCTION withdraw_priority(bigint[])")
    op.execute(OLD_COMMENT)
    # CREATE OR REPLACE reset SECURITY DEFINER: as db/roles/007.sql left them.
    op.execute("ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER")
    op.execute("ALTER FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz) SECURITY DEFINER")
