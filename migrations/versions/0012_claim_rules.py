"""Claim rules: effective priority order, aging, concurrency and rate limits, fair share.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Issue 10 (SPEC section 7), items 2-6 and 9. The claim decides, in Postgres, for
every worker in both modes:

- Claim order is the *effective* priority, ``greatest(priority,
  effective_priority)``: a job's own priority raised by its waiting descendants
  (``lend_priority``, revision 0009) and by aging. ``jobs_claim_idx`` is rebuilt
  on that expression.
- ``jobs.group_key``: the job's group (a tenant, a customer) for per-group rules
  and fair share; ``jobs_group_claim_idx`` finds a queue's groups and their jobs.
- Table ``queue_policies``: one row per queue with rules (``set_queue_policy``,
  ``clear_queue_policy``): max_running, a rate limit (token bucket, its state on
  the row), the same per group, fair share between groups, an aging step.
- Table ``group_states``: per (queue, group) weight, fair-share virtual time and
  rate bucket (``set_group_weight``; claims write the rest).
- Functions: ``lock_plain_jobs`` (the claim of queues without rules: the old
  ``lock_runnable_jobs`` body), ``lock_runnable_jobs/003`` (dispatch),
  ``lock_policy_jobs``, ``lock_group_jobs``, ``token_refill``, ``age_jobs``;
  ``lock_runnable_jobs_by_id/003`` and ``runnable_jobs_after/003`` leave queues
  with a policy to Postgres claims (Redis cannot weigh its rules);
  ``claim_locked_jobs/002`` keeps the order the lock chose.
- Views ``job_blockers/002`` (the rules' reasons), ``queue_policy_usage``.
- Roles: ``db/roles/011.sql``.

The downgrade restores the previous files and the old claim index, then drops
what this revision added.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

QUEUE_NAME = "queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(queue) <= 100"

TABLES = f"""
ALTER TABLE jobs ADD COLUMN group_key text;
ALTER TABLE jobs ADD CONSTRAINT jobs_group_key_length CHECK (length(group_key) BETWEEN 1 AND 200);
COMMENT ON COLUMN jobs.group_key IS
    'The job''s group (a tenant, a customer), or NULL: its queue''s per-group limits and fair share count it in this group.';
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (queue, greatest(priority, effective_priority) DESC, run_at, id)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX jobs_group_claim_idx
    ON jobs (queue, group_key, greatest(priority, effective_priority) DESC, run_at, id)
    WHERE status IN ('queued', 'retrying') AND group_key IS NOT NULL;

CREATE TABLE queue_policies (
    queue text PRIMARY KEY,
    max_running integer,
    rate_limit integer,
    rate_period interval,
    group_max_running integer,
    group_rate_limit integer,
    group_rate_period interval,
    fair_share boolean NOT NULL DEFAULT false,
    aging_step interval,
    tokens double precision,
    refilled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    has_claim_rules boolean GENERATED ALWAYS AS (
        max_running IS NOT NULL OR rate_limit IS NOT NULL OR group_max_running IS NOT NULL
        OR group_rate_limit IS NOT NULL OR fair_share) STORED,
    CONSTRAINT queue_policies_queue_name CHECK ({QUEUE_NAME}),
    CONSTRAINT queue_policies_max_running_range CHECK (max_running BETWEEN 1 AND 1000000),
    CONSTRAINT queue_policies_group_max_running_range CHECK (group_max_running BETWEEN 1 AND 1000000),
    CONSTRAINT queue_policies_rate_limit_range CHECK (rate_limit BETWEEN 1 AND 1000000),
    CONSTRAINT queue_policies_group_rate_limit_range CHECK (group_rate_limit BETWEEN 1 AND 1000000),
    CONSTRAINT queue_policies_rate_period_range
        CHECK (rate_period >= interval '1 millisecond' AND rate_period <= interval '1 day'),
    CONSTRAINT queue_policies_group_rate_period_range
        CHECK (group_rate_period >= interval '1 millisecond' AND group_rate_period <= interval '1 day'),
    CONSTRAINT queue_policies_rate_pair CHECK ((rate_limit IS NULL) = (rate_period IS NULL)),
    CONSTRAINT queue_policies_group_rate_pair CHECK ((group_rate_limit IS NULL) = (group_rate_period IS NULL)),
    CONSTRAINT queue_policies_aging_step_range
        CHECK (aging_step >= interval '1 millisecond' AND aging_step <= interval '30 days')
);
COMMENT ON TABLE queue_policies IS
    'Claim rules per queue (set_queue_policy, clear_queue_policy): limits, rate limits, per-group rules, fair share, aging. '
    'Every claim obeys them (lock_policy_jobs); a queue with a policy is claimed from Postgres only.';
COMMENT ON COLUMN queue_policies.queue IS 'The queue the rules apply to.';
COMMENT ON COLUMN queue_policies.max_running IS 'At most this many of the queue''s jobs running at once, across all workers; NULL: no limit.';
COMMENT ON COLUMN queue_policies.rate_limit IS 'At most this many claims per rate_period (token bucket, a burst of rate_limit); NULL: no limit.';
COMMENT ON COLUMN queue_policies.rate_period IS 'The period of rate_limit.';
COMMENT ON COLUMN queue_policies.group_max_running IS 'At most this many running jobs per group (jobs.group_key; no group counts as one group).';
COMMENT ON COLUMN queue_policies.group_rate_limit IS 'At most this many claims per group_rate_period, per group (a bucket each, in group_states).';
COMMENT ON COLUMN queue_policies.group_rate_period IS 'The period of group_rate_limit.';
COMMENT ON COLUMN queue_policies.fair_share IS 'Weighted fair share between groups with runnable jobs (weights in group_states).';
COMMENT ON COLUMN queue_policies.aging_step IS 'Aging: one priority band gained per aging_step waited past run_at, up to 5 (age_jobs); NULL: no aging.';
COMMENT ON COLUMN queue_policies.tokens IS 'The queue''s rate bucket: tokens left at refilled_at (NULL: full). Written by claims.';
COMMENT ON COLUMN queue_policies.refilled_at IS 'When tokens was last computed (the claim''s time).';
COMMENT ON COLUMN queue_policies.created_at IS 'When the queue first got a policy.';
COMMENT ON COLUMN queue_policies.updated_at IS 'When its rules last changed (set_queue_policy).';
COMMENT ON COLUMN queue_policies.has_claim_rules IS 'Claims of the queue obey rules (any but aging): lock_policy_jobs claims it.';

CREATE TABLE group_states (
    queue text NOT NULL REFERENCES queue_policies (queue) ON DELETE CASCADE,
    group_key text NOT NULL,
    weight double precision NOT NULL DEFAULT 1,
    vtime double precision NOT NULL DEFAULT 0,
    tokens double precision,
    refilled_at timestamptz,
    PRIMARY KEY (queue, group_key),
    CONSTRAINT group_states_group_key_length CHECK (length(group_key) <= 200),
    CONSTRAINT group_states_weight_range CHECK (weight > 0 AND weight <= 1000000)
);
COMMENT ON TABLE group_states IS
    'Per queue and group: fair-share weight (set_group_weight) and the claim''s state (virtual time, rate bucket).';
COMMENT ON COLUMN group_states.queue IS 'The queue (it has a policy).';
COMMENT ON COLUMN group_states.group_key IS 'The group (jobs.group_key); '''' for jobs without one.';
COMMENT ON COLUMN group_states.weight IS 'Fair-share weight: claims in proportion to it while several groups have backlog.';
COMMENT ON COLUMN group_states.vtime IS 'Fair-share virtual time: advanced by jobs claimed / weight.';
COMMENT ON COLUMN group_states.tokens IS 'The group''s rate bucket: tokens left at refilled_at (NULL: full).';
COMMENT ON COLUMN group_states.refilled_at IS 'When the group last took jobs (the claim''s time).';
"""

FILES = [
    "functions/token_refill/001.sql",
    "functions/lock_plain_jobs/001.sql",
    "functions/lock_group_jobs/001.sql",
    "functions/lock_policy_jobs/001.sql",
    "functions/lock_runnable_jobs/003.sql",
    "functions/lock_runnable_jobs_by_id/003.sql",
    "functions/runnable_jobs_after/003.sql",
    "functions/claim_locked_jobs/002.sql",
    "functions/set_queue_policy/001.sql",
    "functions/clear_queue_policy/001.sql",
    "functions/set_group_weight/001.sql",
    "functions/age_jobs/001.sql",
    "views/job_blockers/002.sql",
    "views/queue_policy_usage/001.sql",
]

PREVIOUS = [
    "functions/lock_runnable_jobs/002.sql",
    "functions/lock_runnable_jobs_by_id/002.sql",
    "functions/runnable_jobs_after/002.sql",
    "functions/claim_locked_jobs/001.sql",
]

RESTORE = """
ALTER FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) SECURITY DEFINER;
DROP VIEW job_blockers;
"""

DROPS = """
DROP VIEW queue_policy_usage;
DROP FUNCTION age_jobs(timestamptz);
DROP FUNCTION set_group_weight(text, text, double precision);
DROP FUNCTION clear_queue_policy(text);
DROP FUNCTION set_queue_policy(text, integer, integer, interval, integer, integer, interval, boolean, interval,
                               timestamptz);
DROP FUNCTION lock_policy_jobs(text, integer, timestamptz);
DROP FUNCTION lock_group_jobs(queue_policies, integer, timestamptz);
DROP FUNCTION lock_plain_jobs(text[], integer, timestamptz);
DROP FUNCTION token_refill(double precision, timestamptz, integer, interval, timestamptz);
DROP TABLE group_states;
DROP TABLE queue_policies;
DROP INDEX jobs_group_claim_idx;
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE status IN ('queued', 'retrying');
ALTER TABLE jobs DROP COLUMN group_key;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(TABLES)
    for name in FILES:
        run_sql_file(name)
    run_sql_file("roles/011.sql")


def downgrade() -> None:
    enter_schema()
    for name in PREVIOUS:
        run_sql_file(name)
    op.execute(RESTORE)
    run_sql_file("views/job_blockers/001.sql")
    op.execute(DROPS)
