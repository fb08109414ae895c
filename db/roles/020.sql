-- Roles for revision 0021, withdrawn priority (the model is db/roles/001.sql's; read it first).
--
--   cancel_job                   replaced (CREATE OR REPLACE resets SECURITY DEFINER):
--                                definer again, grants unchanged
--   withdraw_priority            internal helper, called by the definer functions as
--                                the owner: closed to PUBLIC, granted to nobody
--   cancel_waiting_descendants,  replaced; internal, as before (they never were
--   requeue_dead_jobs_v2         definer: requeue_dead_jobs_v2 is, and keeps it)
--
-- Runs with search_path set to the pgq schema. Idempotent:
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO pgq, pg_catalog, pg_temp' -f db/roles/020.sql

ALTER FUNCTION cancel_job(bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION requeue_dead_jobs_v2(bigint[], text, boolean, timestamptz) SECURITY DEFINER;
REVOKE ALL ON FUNCTION withdraw_priority(bigint[]) FROM PUBLIC;
