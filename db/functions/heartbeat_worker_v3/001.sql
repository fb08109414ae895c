-- pgq.heartbeat_worker_v3(p_worker_id, p_current_load, p_running_job_ids, p_started_through, p_sample, p_now)
-- heartbeat_worker_v2, plus the worker's health sample, in the same statement
-- (one round trip per heartbeat, no extra connection).
--
-- p_sample is a JSON object of the sample's metrics, or NULL (no sample:
-- exactly heartbeat_worker_v2). Its keys are the sample columns of
-- worker_health_logs (any may be left out, stored as NULL):
--   interval_seconds, jobs_completed, jobs_failed, error_rate, latency_p50_ms,
--   latency_p95_ms, claim_rtt_ms, ack_rtt_ms, ack_lag_ms, in_flight, capacity,
--   stuck_handlers, rss_bytes, cpu_percent, loop_lag_ms, health_score.
-- An unknown key, a value that is not a number, or a value out of range
-- (the table's CHECK constraints) raises and records nothing, not even the
-- heartbeat. health_score, when given, is also stored in workers.health_score.
-- The sample is one row of worker_health_logs, metric_type 'heartbeat',
-- metric_value the health score (the worker's stored score when the sample
-- has none), logged_at p_now.
--
-- Returns what heartbeat_worker_v2 returns. Raises PQ002 when the worker is
-- stopped or unknown, PQ004 for a bad sample or a negative watermark.
-- Example: SELECT * FROM pgq.heartbeat_worker_v3('<worker uuid>', 2, '{41,42}', 40,
--              '{"jobs_completed": 120, "jobs_failed": 1, "latency_p50_ms": 12.5, "health_score": 0.97}');
CREATE OR REPLACE FUNCTION heartbeat_worker_v3(
    p_worker_id uuid,
    p_current_load integer DEFAULT 0,
    p_running_job_ids bigint[] DEFAULT '{}',
    p_started_through bigint DEFAULT NULL,
    p_sample jsonb DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (status worker_status_enum, previous_status worker_status_enum, lost_job_ids bigint[],
                 rescued_job_ids bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_keys constant text[] := ARRAY[
        'interval_seconds', 'jobs_completed', 'jobs_failed', 'error_rate', 'latency_p50_ms', 'latency_p95_ms',
        'claim_rtt_ms', 'ack_rtt_ms', 'ack_lag_ms', 'in_flight', 'capacity', 'stuck_handlers', 'rss_bytes',
        'cpu_percent', 'loop_lag_ms', 'health_score'];
    v_bad text;
    v_score real;
BEGIN
    IF p_sample IS NOT NULL THEN
        IF jsonb_typeof(p_sample) <> 'object' THEN
            RAISE EXCEPTION 'heartbeat_worker_v3: p_sample must be a JSON object, got %', jsonb_typeof(p_sample)
                USING ERRCODE = 'PQ004';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_bad
        FROM jsonb_each(p_sample) AS e(k, v)
        WHERE k <> ALL (v_keys) OR jsonb_typeof(v) NOT IN ('number', 'null');
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'heartbeat_worker_v3: unknown sample keys or values that are not numbers: %', v_bad
                USING ERRCODE = 'PQ004';
        END IF;
        v_score := (p_sample->>'health_score')::real;
    END IF;

    RETURN QUERY SELECT * FROM heartbeat_worker_v2(p_worker_id, p_current_load, p_running_job_ids,
                                                   p_started_through, v_score, p_now);

    IF p_sample IS NOT NULL THEN
        INSERT INTO worker_health_logs (
            worker_id, metric_type, metric_value, logged_at, interval_seconds, jobs_completed, jobs_failed,
            error_rate, latency_p50_ms, latency_p95_ms, claim_rtt_ms, ack_rtt_ms, ack_lag_ms, in_flight, capacity,
            stuck_handlers, rss_bytes, cpu_percent, loop_lag_ms, health_score)
        SELECT p_worker_id, 'heartbeat', coalesce((p_sample->>'health_score')::float8, w.health_score), p_now,
               (p_sample->>'interval_seconds')::real, (p_sample->>'jobs_completed')::integer,
               (p_sample->>'jobs_failed')::integer, (p_sample->>'error_rate')::real,
               (p_sample->>'latency_p50_ms')::real, (p_sample->>'latency_p95_ms')::real,
               (p_sample->>'claim_rtt_ms')::real, (p_sample->>'ack_rtt_ms')::real,
               (p_sample->>'ack_lag_ms')::real, (p_sample->>'in_flight')::integer,
               (p_sample->>'capacity')::integer, (p_sample->>'stuck_handlers')::integer,
               (p_sample->>'rss_bytes')::bigint, (p_sample->>'cpu_percent')::real,
               (p_sample->>'loop_lag_ms')::real, v_score
        FROM workers AS w WHERE w.id = p_worker_id;
    END IF;
END
$$;
COMMENT ON FUNCTION heartbeat_worker_v3(uuid, integer, bigint[], bigint, jsonb, timestamptz) IS
    'heartbeat_worker_v2 plus the worker''s health sample (a JSON object of worker_health_logs'' sample columns, or NULL) recorded as one worker_health_logs row in the same statement; health_score also goes to workers.health_score.';
