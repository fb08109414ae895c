"""Support for the optional Redis accelerator.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Three stored functions, each from its file under db/ (STYLE §4):
``claim_jobs`` (claim popped ids with get_runnable_jobs' fence),
``mirror_horizon`` and ``runnable_jobs_after`` (the reconciler's watermark
and its window scan). No table changes: the mirror needs nothing on the
enqueue or claim hot path of Postgres-only deployments.

Roles: revision 0003 revoked EXECUTE from PUBLIC on the functions that
existed then. ``db/roles/002.sql`` does the same for these three, makes them
SECURITY DEFINER (claim_jobs writes jobs; mirror_horizon must see other
roles' sessions) and grants them to ``<schema>_worker``, which claims and
runs the reconciler; when that role does not exist it warns and skips the
grant, as 0003 does. The downgrade drops the functions, and their grants
with them.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FILES = [
    "functions/claim_jobs/001.sql",
    "functions/mirror_horizon/001.sql",
    "functions/runnable_jobs_after/001.sql",
]

DROPS = """
DROP FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer);
DROP FUNCTION mirror_horizon();
DROP FUNCTION claim_jobs(bigint[], uuid, timestamptz);
"""


def upgrade() -> None:
    enter_schema()
    for name in FILES:
        run_sql_file(name)
    run_sql_file("roles/002.sql")


def downgrade() -> None:
    enter_schema()
    op.execute(DROPS)
