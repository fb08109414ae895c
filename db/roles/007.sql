-- Roles for revision 0009, job graphs (the model is db/roles/001.sql's; read it first).
--
--   enqueue_jobs_v2, enqueue_job_v2   enqueue with parents; granted to <schema>_producer
--   requeue_dead_jobs_v2              requeue with dependents: a repair, like requeue_dead_jobs
--                                     it stays with the owner (definer, granted to nobody)
--   complete_jobs, cancel_job         replaced (CREATE OR REPLACE resets SECURITY
--                                     DEFINER): definer again, grants unchanged
--   release_waiting_children,         internal helpers, called by the definer functions
--   lend_priority,                    above (and record_failed_attempt) as the owner:
--   cancel_waiting_descendants        closed to PUBLIC, granted to nobody
--   job_blockers (view)               SELECT granted to <schema>_producer, as the other views
--
-- The entry points are SECURITY DEFINER: they write jobs and job_dependencies,
-- which the producer may not UPDATE (and may only INSERT the columns of a new job).
--
-- Runs with search_path set to the pgq schema. Idempotent: when the producer
-- role does not exist, it warns and skips the grants; once a DBA created the
-- roles, the schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/007.sql

ALTER FUNCTION enqueue_jobs_v2(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                               text[], double precision[], double precision[], double precision[],
                               double precision[], integer[], bigint[], integer[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION enqueue_job_v2(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                              bigint[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER;
ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION enqueue_jobs_v2(text[], jsonb[], text[], integer[], timestamptz[], integer[],
                                       double precision[], text[], double precision[], double precision[],
                                       double precision[], double precision[], integer[], bigint[], integer[],
                                       timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION enqueue_job_v2(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                                      bigint[], timestamptz) FROM PUBLIC;
ALTER FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION release_waiting_children(bigint[], timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION lend_priority(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION cancel_waiting_descendants(bigint, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grants on enqueue_jobs_v2, enqueue_job_v2 and job_blockers are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 007.sql again',
                      v_producer, v_producer;
        RETURN;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION enqueue_jobs_v2(text[], jsonb[], text[], integer[], timestamptz[], '
                   'integer[], double precision[], text[], double precision[], double precision[], '
                   'double precision[], double precision[], integer[], bigint[], integer[], timestamptz) TO %I',
                   v_producer);
    EXECUTE format('GRANT EXECUTE ON FUNCTION enqueue_job_v2(text, jsonb, text, integer, interval, integer, '
                   'interval, text, timestamptz, bigint[], timestamptz) TO %I', v_producer);
    EXECUTE format('GRANT SELECT ON job_blockers TO %I', v_producer);
END
$roles$;
