"""A NOTIFY when jobs change status, for the waiters of the asyncio API.

Revision ID: 0017
Revises: 0021
Create Date: 2026-12-03

Issue 13, part 2.

- ``notify_job_status()`` and the statement-level trigger ``jobs_notify_job_status``
  (db/triggers/notify_job_status/001.sql): after each statement that updates
  ``jobs.status`` (or deletes jobs), one ``NOTIFY <schema>_job_status`` with an
  empty payload. ``Queue.wait_async`` LISTENs on it rather than polling.

No grants: a trigger function runs with the privileges of the statement's
role, and ``pg_notify`` needs none. The downgrade drops both.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0017"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    enter_schema()
    run_sql_file("triggers/notify_job_status/001.sql")


def downgrade() -> None:
    enter_schema()
    op.execute("DROP TRIGGER jobs_notify_job_status ON jobs")
    op.execute("DROP FUNCTION notify_job_status()")
