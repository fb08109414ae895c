-- pgq.mirror_horizon()
-- The start of the oldest transaction open in this database right now, or
-- now() when that is older. Used by the Redis accelerator's reconciler as its
-- watermark: every job that a transaction still open (or not yet begun) makes
-- runnable gets a run_at at or after that transaction's start (the stored
-- functions set run_at to now() or later), so a later scan of runnable jobs
-- with run_at >= this horizon cannot miss it, whatever order commits land in.
-- Autovacuum workers are left out: they never make a job runnable.
-- Postgres shows a session's xact_start only to its own role and to members of
-- pg_read_all_stats. The function runs as its owner (SECURITY DEFINER, see
-- db/roles/002.sql), so the owner needs that role (a superuser has it):
--   GRANT pg_read_all_stats TO <the role that ran pgq migrate>;
-- Without it other roles' open transactions are not seen and the horizon is
-- later; the reconciler's periodic full sweep then catches what such a late
-- commit made runnable.
-- Example: SELECT pgq.mirror_horizon();
CREATE OR REPLACE FUNCTION mirror_horizon()
RETURNS timestamptz
LANGUAGE sql
VOLATILE
SET search_path FROM CURRENT
AS $$
    SELECT least(now(), min(a.xact_start))
    FROM pg_stat_activity AS a
    WHERE a.datname = current_database()
      AND a.backend_type IS DISTINCT FROM 'autovacuum worker';
$$;
