"""The claim path: race-free claims, draining, and attempts that count only once started.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Columns (each a catalog-only change: nullable or with a constant default, so
no table rewrite; no CHECK, which every claim would evaluate):
- ``jobs.claim_position``: the job's place in its worker's claims
  (``get_runnable_jobs_v2`` / ``claim_jobs_v2``), set by the claiming UPDATE
  itself -- no extra row write;
- ``jobs.free_rescues``: rescues that gave the attempt back (bounded by
  ``max_attempts``, so a job that kills its worker still reaches the DLQ);
- ``workers.started_through``: the worker's watermark, "every job up to this
  position has started", raised by its claims and heartbeats;
- ``workers.drain_requested_at``: when ``drain_worker`` asked it to drain.

Functions, each from its file under db/ (STYLE §4): new internal helpers
(``check_worker_may_claim``, ``lock_runnable_jobs``,
``lock_runnable_jobs_by_id``, ``claim_locked_jobs``, ``rescue_job``), new
entry points beside the old ones (``get_runnable_jobs_v2``,
``claim_jobs_v2``, ``heartbeat_worker_v2``: new parameters and answers) and
``drain_worker``; new bodies for ``get_runnable_jobs`` and ``claim_jobs``
(the same internals, without positions), ``heartbeat_worker`` (a call of its
v2), ``register_worker``, ``mark_stale_workers``, ``deregister_worker`` and
``fail_timed_out_jobs``.
A draining worker's claim raises the new SQLSTATE PQ005.

Roles: ``db/roles/004.sql`` (definer, closed to PUBLIC, the four new entry
points granted to ``<schema>_worker``; the replaced functions made definer
again). The downgrade restores the previous bodies (and their definer
attribute and lack of comment), drops the new functions, then the columns.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = """
ALTER TABLE jobs
    ADD COLUMN claim_position bigint,
    ADD COLUMN free_rescues integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN jobs.claim_position IS
    'Position of the current (or last) claim in its worker''s sequence (get_runnable_jobs_v2, claim_jobs_v2); NULL for a claim without one. Above workers.started_through: the handler has not started.';
COMMENT ON COLUMN jobs.free_rescues IS
    'Rescues that gave the job back without charging an attempt, its handler having not started; at most max_attempts, then rescues charge again.';
ALTER TABLE workers
    ADD COLUMN started_through bigint NOT NULL DEFAULT 0,
    ADD COLUMN drain_requested_at timestamptz;
COMMENT ON COLUMN workers.started_through IS
    'The worker''s report: every job it received with a claim position up to this one has started. Rescues give back the attempts of its jobs above it.';
COMMENT ON COLUMN workers.drain_requested_at IS
    'When drain_worker() asked the worker to drain; NULL if never. Re-registering or coming back from stale keeps it draining.';
"""

FILES = [
    "functions/check_worker_may_claim/001.sql",
    "functions/lock_runnable_jobs/001.sql",
    "functions/lock_runnable_jobs_by_id/001.sql",
    "functions/claim_locked_jobs/001.sql",
    "functions/rescue_job/001.sql",
    "functions/get_runnable_jobs_v2/001.sql",
    "functions/get_runnable_jobs/002.sql",
    "functions/claim_jobs_v2/001.sql",
    "functions/claim_jobs/002.sql",
    "functions/heartbeat_worker_v2/001.sql",
    "functions/heartbeat_worker/002.sql",
    "functions/register_worker/002.sql",
    "functions/mark_stale_workers/002.sql",
    "functions/deregister_worker/002.sql",
    "functions/fail_timed_out_jobs/002.sql",
    "functions/drain_worker/001.sql",
]

# The functions this revision replaced, by their previous file.
PREVIOUS = {
    "functions/get_runnable_jobs/001.sql": "get_runnable_jobs(text[], uuid, integer, timestamptz)",
    "functions/claim_jobs/001.sql": "claim_jobs(bigint[], uuid, timestamptz)",
    "functions/heartbeat_worker/001.sql": "heartbeat_worker(uuid, integer, bigint[], real, timestamptz)",
    "functions/register_worker/001.sql": "register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz)",
    "functions/mark_stale_workers/001.sql": "mark_stale_workers(interval, timestamptz)",
    "functions/deregister_worker/001.sql": "deregister_worker(uuid, timestamptz)",
    "functions/fail_timed_out_jobs/001.sql": "fail_timed_out_jobs(interval, timestamptz)",
}

DROPS = """
DROP FUNCTION drain_worker(uuid, timestamptz);
DROP FUNCTION heartbeat_worker_v2(uuid, integer, bigint[], bigint, real, timestamptz);
DROP FUNCTION claim_jobs_v2(bigint[], uuid, bigint, bigint, timestamptz);
DROP FUNCTION get_runnable_jobs_v2(text[], uuid, integer, bigint, bigint, timestamptz);
DROP FUNCTION rescue_job(bigint, boolean, attempt_outcome, text, text, double precision, timestamptz);
DROP FUNCTION claim_locked_jobs(bigint[], uuid, bigint, bigint, text, timestamptz);
DROP FUNCTION lock_runnable_jobs_by_id(bigint[], timestamptz);
DROP FUNCTION lock_runnable_jobs(text[], integer, timestamptz);
DROP FUNCTION check_worker_may_claim(text, uuid, worker_status_enum);
ALTER TABLE workers DROP COLUMN drain_requested_at, DROP COLUMN started_through;
ALTER TABLE jobs DROP COLUMN free_rescues, DROP COLUMN claim_position;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(COLUMNS)
    for name in FILES:
        run_sql_file(name)
    run_sql_file("roles/004.sql")


def downgrade() -> None:
    enter_schema()
    for name, signature in PREVIOUS.items():
        run_sql_file(name)
        # CREATE OR REPLACE made it SECURITY INVOKER; revision 0003 had made it definer.
        op.execute(f"ALTER FUNCTION {signature} SECURITY DEFINER")
        op.execute(f"COMMENT ON FUNCTION {signature} IS NULL")
    # Revision 0005's comments (fail_timed_out_jobs among them) come back with it.
    run_sql_file("comments/001.sql")
    op.execute(DROPS)
