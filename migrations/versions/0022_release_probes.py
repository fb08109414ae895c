"""Completing jobs and releasing a job graph's children by index probes (issue 10, the graph figure).

Revision ID: 0022
Revises: 0015
Create Date: 2026-12-03

- ``release_waiting_children`` (``002.sql``, internal, called by ``complete_jobs``):
  the same rows, locks and notifications, but found by index probes: the
  children through ``job_dependencies``' primary key, each child's parents
  through ``job_dependencies_child_idx``. Revision 001's statements were planned
  as hash joins over the whole ``jobs`` and ``job_dependencies`` tables, so every
  completion batch with children read both tables (19 ms per 100 children among
  10,000 jobs, growing with the tables).
- ``complete_jobs`` (``004.sql``): calls it for every batch. ``003.sql`` first
  asked whether the batch had children with an EXISTS the planner ran as a
  sequential scan of ``job_dependencies``: a batch of jobs without parents or
  children read every edge of every graph not pruned yet.
- Roles: ``db/roles/021.sql`` (``complete_jobs`` is a security definer again).

No table changes. The downgrade restores ``complete_jobs/003.sql`` (definer
again) and ``release_waiting_children/001.sql``.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0022"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    enter_schema()
    run_sql_file("functions/release_waiting_children/002.sql")
    run_sql_file("functions/complete_jobs/004.sql")
    run_sql_file("roles/021.sql")


def downgrade() -> None:
    enter_schema()
    run_sql_file("functions/complete_jobs/003.sql")
    # CREATE OR REPLACE reset SECURITY DEFINER: as db/roles/007.sql left it.
    op.execute("ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER")
    run_sql_file("functions/release_waiting_children/001.sql")
