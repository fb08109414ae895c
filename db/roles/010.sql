-- Roles for revision 0011 (the model is db/roles/001.sql's; read it first).
--
--   save_snapshot     store a snapshot (the maintenance leader's AUTO snapshots)
--   prune_snapshots   snapshot retention (the maintenance leader)
--
-- Both SECURITY DEFINER (they write state_snapshots, which no role may do
-- directly), closed to PUBLIC and granted to <schema>_worker, which runs
-- maintenance. To take a snapshot the worker role also reads what it copies:
-- SELECT on job_dependencies (jobs and workers it reads already) and on
-- state_snapshots (an INCREMENTAL is computed against its parent). The
-- producer gets nothing. Restore stays with the schema's owner (or a role a
-- DBA gives the table privileges to): it rewrites jobs.
--
-- Runs with search_path set to the pgq schema. Idempotent: when the worker role
-- does not exist, it warns and skips the grants; once a DBA created the roles,
-- the schema's owner runs db/roles/001.sql to 005.sql and this file again:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/010.sql

ALTER FUNCTION save_snapshot(uuid, text, text, uuid, uuid, integer, text, text, bytea, text, jsonb,
                             timestamptz) SECURITY DEFINER;
ALTER FUNCTION prune_snapshots(interval, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION save_snapshot(uuid, text, text, uuid, uuid, integer, text, text, bytea, text, jsonb,
                                     timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION prune_snapshots(interval, timestamptz) FROM PUBLIC;

DO $roles$
DECLARE
    v_worker constant text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_worker) THEN
        RAISE WARNING 'pgq roles: role % does not exist; its grants on save_snapshot, prune_snapshots, '
                      'job_dependencies and state_snapshots are skipped. Ask a DBA to run CREATE ROLE % NOLOGIN, '
                      'then db/roles/001.sql to 010.sql again', v_worker, v_worker;
        RETURN;
    END IF;
    EXECUTE format('GRANT EXECUTE ON FUNCTION save_snapshot(uuid, text, text, uuid, uuid, integer, text, '
                   'text, bytea, text, jsonb, timestamptz) TO %I', v_worker);
    EXECUTE format('GRANT EXECUTE ON FUNCTION prune_snapshots(interval, timestamptz) TO %I', v_worker);
    EXECUTE format('GRANT SELECT ON job_dependencies, state_snapshots TO %I', v_worker);
END
$roles$;
