-- Roles for revision 0010 (the model is db/roles/001.sql's; read it first).
--
--   pause_queue, resume_queue   an operator stops and restarts the claiming of
--                               a queue's jobs (`pgq queue pause|resume`)
--   queue_pauses, paused_queues which queues are paused, since when, by whom
--
-- pause_queue and resume_queue are SECURITY DEFINER (they write queue_pauses,
-- which no role may do directly), closed to PUBLIC and granted to
-- <schema>_producer: the role that decides what goes into queues and may
-- cancel jobs also decides when a queue's jobs are claimed. The worker role
-- does not get them (a worker only claims). Both roles may read queue_pauses
-- (the reconciler of the Redis accelerator reads resumed_at) and the view.
-- runnable_jobs_after, replaced by this revision with CREATE OR REPLACE,
-- is made definer again (its grants survive the replacement).
--
-- Runs with search_path set to the pgq schema. Idempotent: when a role does
-- not exist, it warns and skips its grants; once a DBA created the roles, the
-- schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/008.sql

ALTER FUNCTION pause_queue(text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION resume_queue(text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION runnable_jobs_after(timestamptz, bigint, timestamptz, integer) SECURITY DEFINER;
REVOKE ALL ON FUNCTION pause_queue(text, timestamptz), resume_queue(text, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_producer constant text := current_schema() || '_producer';
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_producer) THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION pause_queue(text, timestamptz), resume_queue(text, timestamptz) TO %I',
                       v_producer);
        EXECUTE format('GRANT SELECT ON queue_pauses, paused_queues TO %I', v_producer);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grants on pause_queue and resume_queue are skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 008.sql again',
                      v_producer, v_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        EXECUTE format('GRANT SELECT ON queue_pauses, paused_queues TO %I', v_worker);
    ELSE
        RAISE WARNING 'pgq roles: role % does not exist; its grant on queue_pauses is skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 008.sql again',
                      v_worker, v_worker;
    END IF;
END
$roles$;
