-- Roles for revision 0007 (the model is db/roles/001.sql's; read it first).
--
--   set_worker_stuck_handlers   a worker records how many of its sync handlers
--                               run on past their timeout
--
-- SECURITY DEFINER (it writes workers, which no role may do directly), closed
-- to PUBLIC and granted to <schema>_worker: a worker reports on itself, as it
-- does with heartbeat_worker. The producer gets nothing. The view
-- worker_status, replaced by this revision with CREATE OR REPLACE, keeps its
-- grants.
--
-- Runs with search_path set to the pgq schema. Idempotent: when the worker
-- role does not exist, it warns and skips the grant; once a DBA created the
-- roles, the schema's owner runs db/roles/001.sql to 004.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/005.sql

ALTER FUNCTION set_worker_stuck_handlers(uuid, integer, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION set_worker_stuck_handlers(uuid, integer, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grant on set_worker_stuck_handlers is skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 005.sql again',
                      v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION set_worker_stuck_handlers(uuid, integer, timestamptz) TO %I',
                   v_worker);
END
$roles$;
