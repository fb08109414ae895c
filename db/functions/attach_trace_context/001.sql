-- pgq.attach_trace_context(p_job_ids, p_trace_context)
-- Stores a producer's trace context (pgq.tracing: W3C traceparent/tracestate
-- as a JSON object) in jobs it just enqueued through enqueue_jobs or
-- enqueue_jobs_v2 (unique keys, parents), which take no context themselves.
-- pgq calls it in the enqueue's own transaction, so no worker can claim one
-- of the jobs before its context is there. Only sets a context not set yet,
-- on jobs not claimed yet (waiting or queued): never moves an existing trace.
-- Returns how many jobs got the context. A context that is not a JSON object
-- raises PQ004.
-- Example: SELECT pgq.attach_trace_context(ARRAY[42], '{"traceparent": "00-...-01"}');
CREATE OR REPLACE FUNCTION attach_trace_context(p_job_ids bigint[], p_trace_context jsonb)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_trace_context IS NULL OR jsonb_typeof(p_trace_context) <> 'object' THEN
        RAISE EXCEPTION 'attach_trace_context: p_trace_context must be a JSON object, got %',
            coalesce(jsonb_typeof(p_trace_context), 'NULL') USING ERRCODE = 'PQ004';
    END IF;
    UPDATE jobs SET trace_context = p_trace_context
    WHERE id = ANY(p_job_ids) AND trace_context IS NULL AND status IN ('waiting', 'queued');
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION attach_trace_context(bigint[], jsonb) IS
    'Store the producer''s trace context (a JSON object) in jobs just enqueued through a function, if they have none and are not claimed yet; returns how many changed. PQ004: not an object.';
