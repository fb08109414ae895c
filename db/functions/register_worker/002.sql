-- pgq.register_worker(p_worker_id, p_hostname, p_pid, p_queues, p_capacity, p_metadata, p_now)
-- Transition (workers): (new) | active | stale | stopped -> active, with a
-- fresh heartbeat; draining stays draining. Registers a worker, or
-- re-activates one with the same id -- except a worker that was asked to
-- drain: a draining worker stays draining, and a stale one that was asked to
-- drain (drain_worker) comes back draining, so a re-registration never undoes
-- a drain. Its next claim raises PQ005 and its heartbeat answers 'draining'.
-- A stopped worker registering again starts a new life: its drain request is
-- cleared.
-- The worker's watermark (workers.started_through) starts again at 0, except
-- for a draining worker, which keeps it (see get_runnable_jobs_v2).
-- Example: SELECT pgq.register_worker(gen_random_uuid(), 'psql', pg_backend_pid(), '{default}', 1);
CREATE OR REPLACE FUNCTION register_worker(
    p_worker_id uuid,
    p_hostname text,
    p_pid integer,
    p_queues text[],
    p_capacity integer DEFAULT 1,
    p_metadata jsonb DEFAULT '{}'::jsonb,
    p_now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    INSERT INTO workers (id, hostname, pid, queues, capacity, status, last_heartbeat,
                         started_at, metadata, created_at, updated_at)
    VALUES (p_worker_id, p_hostname, p_pid, p_queues, p_capacity, 'active', p_now,
            p_now, coalesce(p_metadata, '{}'::jsonb), p_now, p_now)
    ON CONFLICT (id) DO UPDATE
    SET hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues,
        capacity = excluded.capacity,
        status = CASE WHEN workers.status = 'draining'
                        OR (workers.status = 'stale' AND workers.drain_requested_at IS NOT NULL)
                      THEN 'draining'::worker_status_enum
                      ELSE 'active'::worker_status_enum END,
        drain_requested_at = CASE WHEN workers.status = 'stopped' THEN NULL
                                  ELSE workers.drain_requested_at END,
        started_through = CASE WHEN workers.status = 'draining' THEN workers.started_through ELSE 0 END,
        last_heartbeat = p_now, stopped_at = NULL, metadata = excluded.metadata, updated_at = p_now
$$;
COMMENT ON FUNCTION register_worker(uuid, text, integer, text[], integer, jsonb, timestamptz) IS
    'Register a worker (or register the same id again) as active with a fresh heartbeat; a worker asked to drain stays draining.';
