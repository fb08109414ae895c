-- pgq.enqueue_job_v2(p_task, p_payload, p_queue, p_priority, p_delay, p_max_attempts,
--                    p_timeout, p_unique_key, p_run_at, p_depends_on, p_now)
-- Transition: (new) -> waiting, queued or cancelled. enqueue_job plus parents:
-- p_depends_on lists existing job ids (at most 1000) that must complete first.
-- p_priority NULL (the default) inherits the highest priority of the parents
-- (3 without parents). A psql-friendly wrapper over enqueue_jobs_v2 (the rules,
-- and the PQ006 errors for bad graphs, are its).
-- Example: SELECT pgq.enqueue_job_v2('load', '{}', p_depends_on => '{41, 42}');
CREATE OR REPLACE FUNCTION enqueue_job_v2(
    p_task text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority integer DEFAULT NULL,
    p_delay interval DEFAULT interval '0',
    p_max_attempts integer DEFAULT 3,
    p_timeout interval DEFAULT NULL,
    p_unique_key text DEFAULT NULL,
    p_run_at timestamptz DEFAULT NULL,
    p_depends_on bigint[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
    v_n integer := coalesce(cardinality(p_depends_on), 0);
BEGIN
    IF p_delay < interval '0' THEN
        RAISE EXCEPTION 'enqueue_job_v2: p_delay must not be negative (got %)', p_delay
            USING ERRCODE = 'PQ004';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_depends_on) AS u(id) WHERE u.id IS NULL) THEN
        RAISE EXCEPTION 'enqueue_job_v2: p_depends_on must not contain NULL' USING ERRCODE = 'PQ006';
    END IF;
    SELECT e.job_id INTO v_id
    FROM enqueue_jobs_v2(
        ARRAY[p_task], ARRAY[p_payload], ARRAY[p_queue],
        ARRAY[CASE WHEN v_n = 0 THEN coalesce(p_priority, 3) ELSE p_priority END],
        ARRAY[coalesce(p_run_at, p_now + coalesce(p_delay, interval '0'))],
        ARRAY[p_max_attempts],
        ARRAY[extract(epoch FROM p_timeout)::double precision],
        ARRAY[p_unique_key],
        ARRAY[NULL::double precision], ARRAY[NULL::double precision],
        ARRAY[NULL::double precision], ARRAY[NULL::double precision],
        array_fill(1, ARRAY[v_n]), coalesce(p_depends_on, '{}'), array_fill(NULL::integer, ARRAY[v_n]),
        p_now) AS e;
    RETURN v_id;
END
$$;

COMMENT ON FUNCTION enqueue_job_v2(text, jsonb, text, integer, interval, integer, interval, text, timestamptz,
                                   bigint[], timestamptz) IS
    'Enqueues one job that runs after its parents (p_depends_on, existing job ids) completed; returns its id (or the id of the live job holding p_unique_key). A psql-friendly wrapper over enqueue_jobs_v2.';
