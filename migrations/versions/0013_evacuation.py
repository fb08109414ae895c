"""Evacuation of failing workers (issue 11, item 5).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

- ``workers`` gains ``evacuated_at``, ``evacuation_reason`` and ``evacuated_by``
  (all nullable, no default: a catalog-only change): when and why a worker was
  evacuated, and by whom ('worker': itself, from its health score; 'operator').
- Function ``evacuate_worker`` (``db/functions/evacuate_worker/001.sql``):
  ``drain_worker`` plus the reason; the worker exits with code 75 afterwards.
- Roles: ``db/roles/012.sql`` (definer, closed to PUBLIC, granted to
  ``<schema>_worker``, which evacuates itself).

The downgrade drops the function, then the columns.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

COLUMNS = """
ALTER TABLE workers
    ADD COLUMN evacuated_at timestamptz,
    ADD COLUMN evacuation_reason text,
    ADD COLUMN evacuated_by text,
    ADD CONSTRAINT workers_evacuated_by CHECK (evacuated_by IN ('worker', 'operator'));
COMMENT ON COLUMN workers.evacuated_at IS
    'When evacuate_worker() evacuated the worker (NULL: never); it drains, then exits with code 75 for its supervisor to replace it.';
COMMENT ON COLUMN workers.evacuation_reason IS
    'Why the worker was evacuated: its health (score, prediction) or what the operator said.';
COMMENT ON COLUMN workers.evacuated_by IS
    'Who evacuated the worker: worker (itself, from its health score) or operator.';
"""


def upgrade() -> None:
    enter_schema()
    op.execute(COLUMNS)
    run_sql_file("functions/evacuate_worker/001.sql")
    run_sql_file("roles/012.sql")


def downgrade() -> None:
    enter_schema()
    op.execute("DROP FUNCTION evacuate_worker(uuid, text, text, timestamptz)")
    op.execute("ALTER TABLE workers DROP CONSTRAINT workers_evacuated_by, DROP COLUMN evacuated_at, "
               "DROP COLUMN evacuation_reason, DROP COLUMN evacuated_by")
