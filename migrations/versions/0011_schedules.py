"""Scheduling: pause and resume a queue.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02

Issue 10 (SPEC section 7). An operator pauses a queue (``pgq queue pause``,
``pgq.pause_queue``): no claim function takes its jobs any more, enqueue keeps
working; ``resume_queue`` undoes it.

- Table ``queue_pauses``: one row per queue ever paused (when, by whom; resumed_at
  set on resume, the row kept for the Redis accelerator's reconciler).
- Functions ``pause_queue``, ``resume_queue`` (``db/functions/<name>/001.sql``).
- The one definition of "runnable" leaves paused queues out:
  ``lock_runnable_jobs/002.sql``, ``lock_runnable_jobs_by_id/002.sql``, and the
  reconciler's window scan ``runnable_jobs_after/002.sql``.
- View ``paused_queues``.
- Roles: ``db/roles/006.sql``.

The downgrade restores the previous files (definer again where they were), then drops
the view, the functions and the table.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL,
    paused_by text NOT NULL,
    paused_by_application text NOT NULL,
    resumed_at timestamptz,
    resumed_by text,
    resumed_by_application text,
    CONSTRAINT queue_pauses_queue_name
        CHECK (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100),
    CONSTRAINT queue_pauses_resumed_after_paused CHECK (resumed_at IS NULL OR resumed_at >= paused_at)
);
COMMENT ON TABLE queue_pauses IS
    'Queue pauses (pause_queue, resume_queue): a queue is paused while its row has no resumed_at. '
    'The claim functions take no job of a paused queue. Write it through the functions.';
COMMENT ON COLUMN queue_pauses.queue IS 'The paused (or once paused) queue; a name jobs.queue could hold.';
COMMENT ON COLUMN queue_pauses.paused_at IS 'When the current (or last) pause began (the pausing transaction''s time).';
COMMENT ON COLUMN queue_pauses.paused_by IS 'session_user of the session that paused the queue.';
COMMENT ON COLUMN queue_pauses.paused_by_application IS 'application_name of the session that paused the queue.';
COMMENT ON COLUMN queue_pauses.resumed_at IS
    'When the queue was resumed; NULL while it is paused. The Redis reconciler offers the queue''s jobs again after it.';
COMMENT ON COLUMN queue_pauses.resumed_by IS 'session_user of the session that resumed the queue.';
COMMENT ON COLUMN queue_pauses.resumed_by_application IS 'application_name of the session that resumed the queue.';
"""

FILES = [
    "functions/pause_queue/001.sql",
    "functions/resume_queue/001.sql",
    "functions/lock_runnable_jobs/002.sql",
    "functions/lock_runnable_jobs_by_id/002.sql",
    "functions/runnable_jobs_after/002.sql",
    "views/paused_queues/001.sql",
]

PREVIOUS = [
    "functions/lock_runnable_jobs/001.sql",
    "functions/lock_runnable_jobs_by_id/001.sql",
    "functions/runnable_jobs_after/001.sql",
]

RESTORE = """
ALTER FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) SECURITY DEFINER;
COMMENT ON FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) IS
    'Redis accelerator: up to p_limit runnable jobs after (p_after_run_at, p_after_id) and due by p_until, in (run_at, id) order; reads only.';
"""

DROPS = """
DROP VIEW paused_queues;
DROP FUNCTION resume_queue(text, timestamptz);
DROP FUNCTION pause_queue(text, timestamptz);
DROP TABLE queue_pauses;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(TABLES)
    for name in FILES:
        run_sql_file(name)
    run_sql_file("roles/006.sql")


def downgrade() -> None:
    enter_schema()
    for name in PREVIOUS:
        run_sql_file(name)
    op.execute(RESTORE)
    op.execute(DROPS)
