"""Stored functions, triggers and views, from db/.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Each object is installed by executing its exact file under db/ (STYLE §4).
Order matters: helpers before the functions that call them.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FILES = [
    "functions/retry_delay/001.sql",
    "functions/notify_queues/001.sql",
    "functions/enqueue_jobs/001.sql",
    "functions/enqueue_job/001.sql",
    "functions/get_runnable_jobs/001.sql",
    "functions/complete_jobs/001.sql",
    "functions/record_failed_attempt/001.sql",
    "functions/fail_job/001.sql",
    "functions/cancel_job/001.sql",
    "functions/requeue_dead_jobs/001.sql",
    "functions/mark_stale_workers/001.sql",
    "functions/fail_timed_out_jobs/001.sql",
    "functions/register_worker/001.sql",
    "functions/heartbeat_worker/001.sql",
    "functions/release_jobs/001.sql",
    "functions/deregister_worker/001.sql",
    "functions/prune_jobs/001.sql",
    "functions/purge_dead_jobs/001.sql",
    "triggers/set_updated_at/001.sql",
    "triggers/notify_job_available/001.sql",
    "views/queue_stats/001.sql",
    "views/worker_status/001.sql",
    "views/job_history/001.sql",
]

DROPS = """
DROP VIEW job_history;
DROP VIEW worker_status;
DROP VIEW queue_stats;
DROP TRIGGER jobs_notify_job_available ON jobs;
DROP FUNCTION notify_job_available();
DROP TRIGGER jobs_set_updated_at ON jobs;
DROP TRIGGER workers_set_updated_at ON workers;
DROP FUNCTION set_updated_at();
DROP FUNCTION purge_dead_jobs(bigint[], interval, timestamptz);
DROP FUNCTION prune_jobs(interval, integer, timestamptz);
DROP FUNCTION deregister_worker(uuid, timestamptz);
DROP FUNCTION release_jobs(uuid, bigint[], integer[], timestamptz);
DROP FUNCTION heartbeat_worker(uuid, integer, bigint[], real, timestamptz);
DROP FUNCTION register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz);
DROP FUNCTION fail_timed_out_jobs(interval, timestamptz);
DROP FUNCTION mark_stale_workers(interval, timestamptz);
DROP FUNCTION requeue_dead_jobs(bigint[], text, timestamptz);
DROP FUNCTION cancel_job(bigint, timestamptz);
DROP FUNCTION fail_job(bigint, uuid, integer, text, text, text, double precision, boolean, attempt_outcome, timestamptz);
DROP FUNCTION record_failed_attempt(bigint, attempt_outcome, text, text, text, double precision, boolean, timestamptz);
DROP FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz);
DROP FUNCTION get_runnable_jobs(text[], uuid, integer, timestamptz);
DROP FUNCTION enqueue_job(text, jsonb, text, integer, interval, integer, interval, text, timestamptz, timestamptz);
DROP FUNCTION enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[], text[],
                           double precision[], double precision[], double precision[], double precision[], timestamptz);
DROP FUNCTION notify_queues(text[]);
DROP FUNCTION retry_delay(integer, double precision, double precision, double precision);
"""


def upgrade() -> None:
    enter_schema()
    for name in FILES:
        run_sql_file(name)


def downgrade() -> None:
    enter_schema()
    op.execute(DROPS)
