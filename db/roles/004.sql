-- Roles for the claim path of revision 0006 (the model is db/roles/001.sql's;
-- read it first).
--
--   get_runnable_jobs_v2, claim_jobs_v2   claim with positions and the started
--                                         watermark
--   heartbeat_worker_v2                   heartbeat with the watermark; says
--                                         draining and what it rescued
--   drain_worker                          ask a worker to drain
--
-- All four are SECURITY DEFINER (they write jobs or workers, which no role may
-- do directly), closed to PUBLIC and granted to <schema>_worker: workers claim
-- and beat, and the worker role may already stop a worker (deregister_worker),
-- so it may ask one to drain (`pgq workers drain`). The producer gets none.
--
-- Revision 0006 also replaces get_runnable_jobs, claim_jobs, heartbeat_worker,
-- register_worker, mark_stale_workers, deregister_worker and
-- fail_timed_out_jobs with CREATE OR REPLACE, which keeps their grants but
-- makes them SECURITY INVOKER again: they are made definer again here.
--
-- The internal helpers (check_worker_may_claim, lock_runnable_jobs,
-- lock_runnable_jobs_by_id, claim_locked_jobs, rescue_job) stay SECURITY INVOKER, closed to PUBLIC and
-- granted to nobody: only the functions above call them.
--
-- Runs with search_path set to the pgq schema. Idempotent: when the worker
-- role does not exist, it warns and skips the grants; once a DBA created the
-- roles, the schema's owner runs db/roles/001.sql, 002.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/004.sql

ALTER FUNCTION get_runnable_jobs_v2(text[], uuid, integer, bigint, bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION claim_jobs_v2(bigint[], uuid, bigint, bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION heartbeat_worker_v2(uuid, integer, bigint[], bigint, real, timestamptz) SECURITY DEFINER;
ALTER FUNCTION drain_worker(uuid, timestamptz) SECURITY DEFINER;
-- Replaced by this revision (CREATE OR REPLACE resets SECURITY DEFINER).
ALTER FUNCTION get_runnable_jobs(text[], uuid, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION claim_jobs(bigint[], uuid, timestamptz) SECURITY DEFINER;
ALTER FUNCTION heartbeat_worker(uuid, integer, bigint[], real, timestamptz) SECURITY DEFINER;
ALTER FUNCTION register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz) SECURITY DEFINER;
ALTER FUNCTION mark_stale_workers(interval, timestamptz) SECURITY DEFINER;
ALTER FUNCTION deregister_worker(uuid, timestamptz) SECURITY DEFINER;
ALTER FUNCTION fail_timed_out_jobs(interval, timestamptz) SECURITY DEFINER;

REVOKE ALL ON FUNCTION get_runnable_jobs_v2(text[], uuid, integer, bigint, bigint, timestamptz),
                       claim_jobs_v2(bigint[], uuid, bigint, bigint, timestamptz),
                       heartbeat_worker_v2(uuid, integer, bigint[], bigint, real, timestamptz),
                       drain_worker(uuid, timestamptz),
                       check_worker_may_claim(text, uuid, worker_status_enum),
                       lock_runnable_jobs(text[], integer, timestamptz),
                       lock_runnable_jobs_by_id(bigint[], timestamptz),
                       claim_locked_jobs(bigint[], uuid, bigint, bigint, text, timestamptz),
                       rescue_job(bigint, boolean, attempt_outcome, text, text, double precision, timestamptz)
    FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grants on the claim path''s functions are '
                      'skipped. Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql, 002.sql, '
                      '003.sql and 004.sql again', v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format($sql$
        GRANT EXECUTE ON FUNCTION
            get_runnable_jobs_v2(text[], uuid, integer, bigint, bigint, timestamptz),
            claim_jobs_v2(bigint[], uuid, bigint, bigint, timestamptz),
            heartbeat_worker_v2(uuid, integer, bigint[], bigint, real, timestamptz),
            drain_worker(uuid, timestamptz)
        TO %I
    $sql$, v_worker);
END
$roles$;
