"""Scheduling: pause and resume a queue; periodic (cron) schedules.

Revision ID: 0010
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
- Table ``schedules``: periodic (cron) schedules, registered by applications
  (``register_schedule``), ticked by the maintenance leader
  (``enqueue_schedule_ticks``, ``set_schedule_next_tick``); DBAs read and edit it.
- Roles: ``db/roles/008.sql`` (pausing), ``db/roles/009.sql`` (schedules).

The downgrade restores the previous files (definer again where they were), then drops
the view, the functions and the table.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0010"
down_revision = "0009"
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

CREATE TABLE schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    task text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    queue text NOT NULL DEFAULT 'default',
    priority smallint NOT NULL DEFAULT 3,
    max_attempts integer NOT NULL DEFAULT 3,
    catch_up text NOT NULL DEFAULT 'once',
    catch_up_limit integer NOT NULL DEFAULT 100,
    misfire_grace_seconds double precision NOT NULL DEFAULT 60,
    enabled boolean NOT NULL DEFAULT true,
    next_tick timestamptz,
    last_tick timestamptz,
    last_job_id bigint,
    ticked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_name CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(name) <= 100),
    CONSTRAINT schedules_cron_length CHECK (length(cron) BETWEEN 1 AND 200),
    CONSTRAINT schedules_task_name CHECK (task ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(task) <= 200),
    CONSTRAINT schedules_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT schedules_queue_name CHECK (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100),
    CONSTRAINT schedules_priority_range CHECK (priority BETWEEN 1 AND 5),
    CONSTRAINT schedules_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT schedules_catch_up CHECK (catch_up IN ('skip', 'once', 'all')),
    CONSTRAINT schedules_catch_up_limit_range CHECK (catch_up_limit BETWEEN 1 AND 10000),
    CONSTRAINT schedules_misfire_grace_range CHECK (misfire_grace_seconds >= 0
                                                    AND misfire_grace_seconds < 'Infinity'::double precision)
);
CREATE INDEX schedules_next_tick_idx ON schedules (next_tick) WHERE enabled;
COMMENT ON TABLE schedules IS
    'Periodic (cron) schedules: the maintenance leader enqueues one job per tick (enqueue_schedule_ticks). '
    'Applications register them (register_schedule); DBAs may edit them (set next_tick to NULL after changing cron).';
COMMENT ON COLUMN schedules.name IS 'The schedule''s name (unique; by default the task''s name).';
COMMENT ON COLUMN schedules.cron IS 'A five-field cron expression (minute hour day-of-month month day-of-week), read by croniter.';
COMMENT ON COLUMN schedules.timezone IS 'IANA time zone the expression is read in (e.g. Europe/Paris; DST as croniter does).';
COMMENT ON COLUMN schedules.task IS 'Task of the jobs enqueued at each tick.';
COMMENT ON COLUMN schedules.payload IS 'Payload (a JSON object) of the jobs enqueued at each tick.';
COMMENT ON COLUMN schedules.queue IS 'Queue of the jobs enqueued at each tick.';
COMMENT ON COLUMN schedules.priority IS 'Priority (1-5) of the jobs enqueued at each tick.';
COMMENT ON COLUMN schedules.max_attempts IS 'max_attempts of the jobs enqueued at each tick.';
COMMENT ON COLUMN schedules.catch_up IS
    'Ticks missed while no leader ran (downtime): skip (none; the latest runs only if at most misfire_grace_seconds late), '
    'once (one job for the latest), all (one job each, at most catch_up_limit, the latest ones).';
COMMENT ON COLUMN schedules.catch_up_limit IS 'With catch_up = all: most ticks enqueued at once after downtime (the latest ones).';
COMMENT ON COLUMN schedules.misfire_grace_seconds IS 'With catch_up = skip: how late a tick may be enqueued before it counts as missed.';
COMMENT ON COLUMN schedules.enabled IS 'false: no tick is enqueued (a DBA may pause a schedule); registering it again enables it.';
COMMENT ON COLUMN schedules.next_tick IS
    'The next tick to enqueue (UTC). NULL: the maintenance leader computes the first tick after now, catching nothing up.';
COMMENT ON COLUMN schedules.last_tick IS 'The latest tick enqueued or skipped; a tick at or before it is never enqueued again.';
COMMENT ON COLUMN schedules.last_job_id IS 'The job enqueued for the latest tick (it may have been pruned since).';
COMMENT ON COLUMN schedules.ticked_at IS 'When the leader last moved the schedule on (database time).';
COMMENT ON COLUMN schedules.created_at IS 'When the schedule was first registered.';
COMMENT ON COLUMN schedules.updated_at IS 'When its definition last changed (register_schedule).';
"""

FILES = [
    "functions/pause_queue/001.sql",
    "functions/resume_queue/001.sql",
    "functions/lock_runnable_jobs/002.sql",
    "functions/lock_runnable_jobs_by_id/002.sql",
    "functions/runnable_jobs_after/002.sql",
    "views/paused_queues/001.sql",
    "functions/register_schedule/001.sql",
    "functions/enqueue_schedule_ticks/001.sql",
    "functions/set_schedule_next_tick/001.sql",
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
DROP FUNCTION set_schedule_next_tick(text, timestamptz, timestamptz);
DROP FUNCTION enqueue_schedule_ticks(text, timestamptz, timestamptz, timestamptz[], timestamptz, timestamptz);
DROP FUNCTION register_schedule(text, text, text, text, jsonb, text, integer, integer, text, integer,
                                double precision, timestamptz, timestamptz);
DROP TABLE schedules;
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
    run_sql_file("roles/008.sql")
    run_sql_file("roles/009.sql")


def downgrade() -> None:
    enter_schema()
    for name in PREVIOUS:
        run_sql_file(name)
    op.execute(RESTORE)
    op.execute(DROPS)
