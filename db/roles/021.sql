-- Roles for revision 0022, releases by index probes (the model is db/roles/001.sql's; read it first).
--
--   complete_jobs                replaced (CREATE OR REPLACE resets SECURITY DEFINER):
--                                definer again, grants unchanged
--   release_waiting_children     replaced; internal, as before (never definer; PUBLIC
--                                stays revoked: CREATE OR REPLACE keeps the grants)
--
-- Runs with search_path set to the pgq schema. Idempotent:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/021.sql

ALTER FUNCTION complete_jobs(uuid, bigint[], integer[], jsonb[], timestamptz) SECURITY DEFINER;
