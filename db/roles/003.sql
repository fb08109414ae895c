-- Roles for what revision 0005 adds or replaces (the model is db/roles/001.sql's;
-- read it first).
--
-- CREATE OR REPLACE FUNCTION resets what the statement does not say, SECURITY
-- DEFINER included, so the entry points 0005 replaces (complete_jobs,
-- cancel_job, prune_jobs, requeue_dead_jobs, purge_dead_jobs) are made definer
-- again here; their grants are kept (same signatures). One function is new:
--
--   prune_workers   deletes the rows of workers gone for the retention
--                   period; the maintenance leader runs it, so it goes to
--                   <schema>_worker (definer: that role may not DELETE)
--
-- and one view, job_status_estimates, goes to <schema>_producer with the other
-- views (`pgq status` reads it).
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist (revision 0003 could not create it), it warns and skips its
-- grants; once a DBA created the roles, the schema's owner runs
-- db/roles/001.sql, 002.sql and then this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/003.sql

ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION prune_jobs(interval, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION requeue_dead_jobs(bigint[], text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION purge_dead_jobs(bigint[], interval, timestamptz) SECURITY DEFINER;
ALTER FUNCTION prune_workers(interval, integer, timestamptz) SECURITY DEFINER;

REVOKE ALL ON FUNCTION prune_workers(interval, integer, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
    v_worker   constant text := current_schema() || '_worker';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION prune_workers(interval, integer, timestamptz) TO %I', v_worker);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grant on prune_workers is skipped. Ask a DBA to '
                      'run CREATE ROLE % NOLOGIN, then db/roles/001.sql, 002.sql and 003.sql again',
                      v_worker, v_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT SELECT ON job_status_estimates TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grant on job_status_estimates is skipped. Ask a '
                      'DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql, 002.sql and 003.sql again',
                      v_producer, v_producer;
    END IF;
END
$roles$;
