-- pgq.register_worker(p_worker_id, p_hostname, p_pid, p_queues, p_capacity, p_metadata, p_now)
-- Transition (workers): (new) | any -> active. Registers a worker (or
-- re-activates one with the same id) with a fresh heartbeat.
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
        capacity = excluded.capacity, status = 'active', last_heartbeat = p_now,
        stopped_at = NULL, metadata = excluded.metadata, updated_at = p_now
$$;
