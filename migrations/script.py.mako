"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    enter_schema()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    enter_schema()
    ${downgrades if downgrades else "pass"}
