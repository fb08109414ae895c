"""Roles DBAs can grant (an enqueue/read-status role and a worker role), and
check constraints that reject what the bad-input tests found accepted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Roles: ``db/roles/001.sql`` (read it for the model) creates ``<schema>_producer``
and ``<schema>_worker`` (NOLOGIN), makes the entry-point functions SECURITY
DEFINER, revokes EXECUTE on every function from PUBLIC and grants each role
what its job needs. Creating roles needs CREATEROLE; without it the file
warns and skips them (see its header).

Constraints: a job's run_at must be finite ('infinity' would never run), its
backoff numbers finite (a NaN base made every failure of the job an error),
its payload at most 8 MiB as stored jsonb (a backstop for producers that
skip the client's PGQ_MAX_PAYLOAD_BYTES check: SQL, COPY, other languages);
a worker's queues must be queue names and its metadata a JSON object.

Downgrade reverses both; a role is dropped only when no other database still
grants it anything (roles are cluster-wide), else it is kept with a notice.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CONSTRAINTS = r"""
ALTER TABLE jobs
    ADD CONSTRAINT jobs_run_at_finite CHECK (isfinite(run_at)),
    -- NaN sorts above 'Infinity' in Postgres, so "< 'Infinity'" rejects both.
    ADD CONSTRAINT jobs_retry_finite
        CHECK (retry_base_seconds < 'Infinity' AND retry_factor < 'Infinity' AND retry_max_seconds < 'Infinity'),
    -- pg_column_size reads the varlena header only: no detoasting, no cost on
    -- the UPDATEs of claim and complete, which check every constraint again.
    ADD CONSTRAINT jobs_payload_size CHECK (pg_column_size(payload) <= 8388608);
COMMENT ON CONSTRAINT jobs_run_at_finite ON jobs IS 'A job with run_at ''infinity'' would never run.';
COMMENT ON CONSTRAINT jobs_retry_finite ON jobs IS 'Backoff numbers are finite (NaN and infinity are rejected).';
COMMENT ON CONSTRAINT jobs_payload_size ON jobs IS
    'Payloads are at most 8 MiB as stored jsonb: a backstop for producers that skip the client-side PGQ_MAX_PAYLOAD_BYTES check.';

ALTER TABLE workers
    -- Every element is a queue name (the characters of jobs_queue_name): no
    -- element contains the separator, so the joined text splits back into
    -- exactly the elements, and each must match.
    ADD CONSTRAINT workers_queue_names CHECK (
        array_position(queues, NULL) IS NULL
        AND strpos(array_to_string(queues, ''), ',') = 0
        AND (cardinality(queues) = 0  -- that is workers_queues_nonempty's to report
             OR array_to_string(queues, ',') ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*(,[A-Za-z0-9][A-Za-z0-9_.:-]*)*$')),
    ADD CONSTRAINT workers_metadata_object CHECK (jsonb_typeof(metadata) = 'object');
COMMENT ON CONSTRAINT workers_queue_names ON workers IS 'Queues are queue names, as jobs.queue (no NULL, no empty name).';
COMMENT ON CONSTRAINT workers_metadata_object ON workers IS 'metadata is a JSON object.';
"""

DROP_CONSTRAINTS = """
ALTER TABLE workers DROP CONSTRAINT workers_metadata_object, DROP CONSTRAINT workers_queue_names;
ALTER TABLE jobs DROP CONSTRAINT jobs_payload_size, DROP CONSTRAINT jobs_retry_finite,
                 DROP CONSTRAINT jobs_run_at_finite;
"""

# The functions db/roles/001.sql makes SECURITY DEFINER.
ENTRY_POINTS = [
    "enqueue_jobs(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[], text[],"
    " double precision[], double precision[], double precision[], double precision[], timestamptz)",
    "enqueue_job(text, jsonb, text, integer, interval, integer, interval, text, timestamptz, timestamptz)",
    "cancel_job(bigint, timestamptz)",
    "get_runnable_jobs(text[], uuid, integer, timestamptz)",
    "complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz)",
    "fail_job(bigint, uuid, integer, text, text, text, double precision, boolean, attempt_outcome, timestamptz)",
    "release_jobs(uuid, bigint[], integer[], timestamptz)",
    "register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz)",
    "heartbeat_worker(uuid, integer, bigint[], real, timestamptz)",
    "deregister_worker(uuid, timestamptz)",
    "mark_stale_workers(interval, timestamptz)",
    "fail_timed_out_jobs(interval, timestamptz)",
    "prune_jobs(interval, integer, timestamptz)",
    "requeue_dead_jobs(bigint[], text, timestamptz)",
    "purge_dead_jobs(bigint[], interval, timestamptz)",
]

REVERT_ROLES = r"""
DO $roles$
DECLARE
    v_schema constant text := current_schema();
    v_role   text;
BEGIN
    -- Back to Postgres' default: every function executable by PUBLIC.
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO PUBLIC', v_schema);
    FOREACH v_role IN ARRAY ARRAY[v_schema || '_producer', v_schema || '_worker'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %1$I FROM %2$I;'
                       'REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$I;'
                       'REVOKE ALL ON ALL SEQUENCES IN SCHEMA %1$I FROM %2$I;'
                       'REVOKE ALL ON SCHEMA %1$I FROM %2$I', v_schema, v_role);
        -- Roles are cluster-wide: keep one that another database (or another
        -- object here) still grants something to.
        IF EXISTS (SELECT 1 FROM pg_shdepend AS d JOIN pg_roles AS r ON r.oid = d.refobjid
                   WHERE d.refclassid = 'pg_authid'::regclass AND r.rolname = v_role) THEN
            RAISE NOTICE 'pgq roles: role % is kept, other objects still refer to it', v_role;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('DROP ROLE %I', v_role);
        EXCEPTION WHEN insufficient_privilege OR dependent_objects_still_exist THEN
            RAISE WARNING 'pgq roles: role % was not dropped: %', v_role, SQLERRM;
        END;
    END LOOP;
END
$roles$;
"""


def upgrade() -> None:
    enter_schema()
    op.execute(CONSTRAINTS)
    run_sql_file("roles/001.sql")


def downgrade() -> None:
    enter_schema()
    op.execute(REVERT_ROLES)
    for signature in ENTRY_POINTS:
        op.execute(f"ALTER FUNCTION {signature} SECURITY INVOKER")
    op.execute(DROP_CONSTRAINTS)
