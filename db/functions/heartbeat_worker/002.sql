-- pgq.heartbeat_worker(p_worker_id, p_current_load, p_running_job_ids, p_health_score, p_now)
-- Records a heartbeat: heartbeat_worker_v2 without a watermark, answering
-- two of its columns. Returns the worker's status before this heartbeat
-- ('draining': drain_worker asked it to stop claiming; 'stale': its jobs were
-- rescued meanwhile and it is active again from now on) and, of
-- p_running_job_ids, the jobs it no longer owns (cancelled, rescued or timed
-- out): the worker stops them.
-- p_running_job_ids must list every job the worker holds (prefetched,
-- running, or finished but not reported yet): a job it owns in the database
-- but did not list, claimed more than 10 seconds ago, is rescued as
-- 'ClaimLost' (see heartbeat_worker_v2, which also says which jobs it rescued).
-- Raises PQ002 when the worker is stopped or unknown.
-- Example: SELECT * FROM pgq.heartbeat_worker('<worker uuid>', 3, '{41,42,43}');
CREATE OR REPLACE FUNCTION heartbeat_worker(
    p_worker_id uuid,
    p_current_load integer DEFAULT 0,
    p_running_job_ids bigint[] DEFAULT '{}',
    p_health_score real DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (previous_status worker_status_enum, lost_job_ids bigint[])
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT h.previous_status, h.lost_job_ids
    FROM heartbeat_worker_v2(p_worker_id, p_current_load, p_running_job_ids, NULL, p_health_score, p_now) AS h
$$;
COMMENT ON FUNCTION heartbeat_worker(uuid, integer, bigint[], real, timestamptz) IS
    'Record a heartbeat; rescue owned jobs not listed in p_running_job_ids (ClaimLost, claimed > 10 s ago). Returns the status before it and the listed jobs no longer owned; heartbeat_worker_v2 says more.';
