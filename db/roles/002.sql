-- Roles for the Redis accelerator's functions, granted by revision 0004 (the
-- model is db/roles/001.sql's; read it first).
--
--   claim_jobs           a worker claims the ids it popped from Redis
--   mirror_horizon       the reconciler's watermark
--   runnable_jobs_after  the reconciler's window scan
--
-- Revision 0003 revoked EXECUTE from PUBLIC on the functions that existed
-- then; these three were created afterwards, so they are closed here. All
-- three go to <schema>_worker only: workers claim, and the reconciler runs in
-- the worker that leads maintenance. The producer gets none (`pgq status`
-- reads the mirror's health without them).
--
-- All three are SECURITY DEFINER (the search_path pinned when they were
-- created: the pgq schema, pg_catalog, pg_temp last):
-- - claim_jobs updates jobs, which the worker role may not do directly;
-- - mirror_horizon reads the start of other sessions' transactions in
--   pg_stat_activity, which Postgres shows only to the same role or to members
--   of pg_read_all_stats. Running as the owner, it needs that privilege on the
--   owner (a superuser has it), not on the worker login roles, which then
--   cannot read other sessions' query texts:
--     GRANT pg_read_all_stats TO <the role that ran pgq migrate>;
--   Without it the horizon ignores other roles' open transactions, and a job
--   one of them makes runnable reaches Redis at the next full sweep (or a
--   worker's safety-net poll of Postgres) instead of the next pass;
-- - runnable_jobs_after only reads jobs, but runs as the owner like every
--   entry point, so it behaves the same whatever the caller may read.
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist (revision 0003 could not create it), it warns and skips its grants;
-- once a DBA created the roles, the schema's owner runs db/roles/001.sql and
-- then this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/002.sql

ALTER FUNCTION claim_jobs(bigint[], uuid, timestamptz) SECURITY DEFINER;
ALTER FUNCTION mirror_horizon() SECURITY DEFINER;
ALTER FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) SECURITY DEFINER;

REVOKE ALL ON FUNCTION claim_jobs(bigint[], uuid, timestamptz),
                       mirror_horizon(),
                       runnable_jobs_after(timestamptz, bigint, timestamptz, integer)
    FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grants on the Redis accelerator''s functions are '
                      'skipped. Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql and '
                      'db/roles/002.sql again', v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format($sql$
        GRANT EXECUTE ON FUNCTION
            claim_jobs(bigint[], uuid, timestamptz),
            mirror_horizon(),
            runnable_jobs_after(timestamptz, bigint, timestamptz, integer)
        TO %I
    $sql$, v_worker);
END
$roles$;
