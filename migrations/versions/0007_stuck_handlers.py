"""Stuck handlers: a worker records how many of its sync handlers run on past their timeout.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A sync handler that runs past its job's timeout cannot be stopped (a thread
cannot be killed): the worker fails the job (timed_out), starts a new runner
thread in its place and counts the old one as stuck until its handler
returns. The count is shown to operators (issue 9, defect 4).

- Column ``workers.stuck_handlers`` (integer, default 0: a catalog-only change,
  no table rewrite; the CHECK reads the tiny workers table once).
- Function ``set_worker_stuck_handlers`` (``db/functions/set_worker_stuck_handlers/001.sql``).
- View ``worker_status`` gains the column ``stuck_handlers`` (``db/views/worker_status/002.sql``).
- Roles: ``db/roles/005.sql`` (definer, closed to PUBLIC, granted to ``<schema>_worker``).

The downgrade restores the view's previous file (with the privileges it held), drops the
function, then the column.
"""

import sqlalchemy as sa
from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = """
ALTER TABLE workers
    ADD COLUMN stuck_handlers integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT workers_stuck_handlers_nonnegative CHECK (stuck_handlers >= 0);
COMMENT ON COLUMN workers.stuck_handlers IS
    'Sync handlers of this worker still running past their job''s timeout (or after their job was '
    'cancelled), whose runner threads it replaced; set_worker_stuck_handlers.';
"""

DROPS = """
DROP FUNCTION set_worker_stuck_handlers(uuid, integer, timestamptz);
ALTER TABLE workers DROP COLUMN stuck_handlers;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(COLUMNS)
    run_sql_file("functions/set_worker_stuck_handlers/001.sql")
    run_sql_file("views/worker_status/002.sql")
    run_sql_file("roles/005.sql")


def downgrade() -> None:
    enter_schema()
    # A view cannot lose a column with CREATE OR REPLACE: drop it and create it as it
    # was, then give back the privileges it held (the producer role's, a DBA's).
    bind = op.get_bind()
    grants = bind.execute(sa.text(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type,"
        "       a.is_grantable"
        " FROM pg_class AS c, aclexplode(c.relacl) AS a LEFT JOIN pg_roles AS r ON r.oid = a.grantee"
        " WHERE c.oid = 'worker_status'::regclass AND a.grantee <> c.relowner")).fetchall()
    op.execute("DROP VIEW worker_status")
    run_sql_file("views/worker_status/001.sql")
    for grantee, privilege, grantable in grants:
        option = " WITH GRANT OPTION" if grantable else ""
        op.execute(f"GRANT {privilege} ON worker_status TO {grantee}{option}")
    op.execute(DROPS)
