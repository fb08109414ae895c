-- Roles for revision 0013 (the model is db/roles/001.sql's; read it first).
--
--   evacuate_worker   a worker evacuates itself (its health score); an operator evacuates one
--
-- SECURITY DEFINER (it writes workers, which no role may do directly), closed
-- to PUBLIC and granted to <schema>_worker, like drain_worker (db/roles/004.sql):
-- a worker evacuates itself. An operator runs it as the schema's owner (or a
-- role a DBA grants it to), as for drain_worker.
--
-- Runs with search_path set to the pgq schema. Idempotent: when the worker role
-- does not exist, it warns and skips the grant; once a DBA created the roles,
-- the schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/012.sql

ALTER FUNCTION evacuate_worker(uuid, text, text, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION evacuate_worker(uuid, text, text, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grant on evacuate_worker is skipped. '
                      'Ask a DBA to run CREATE ROLE % NOLOGIN, then db/roles/001.sql to 005.sql and 012.sql again',
                      v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION evacuate_worker(uuid, text, text, timestamptz) TO %I', v_worker);
END
$roles$;
