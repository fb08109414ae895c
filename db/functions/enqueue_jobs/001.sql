-- pgq.enqueue_jobs(p_tasks[], p_payloads[], p_queues[], p_priorities[], p_run_at[],
--                  p_max_attempts[], p_timeout_seconds[], p_unique_keys[],
--                  p_retry_base[], p_retry_factor[], p_retry_max[], p_retry_jitter[], p_now)
-- Transition: (new) -> queued. Inserts a batch of jobs in one statement.
-- Element i of every array describes job i; NULL elements take the column
-- defaults (run_at NULL = p_now). A job whose unique_key matches a live job is
-- not inserted: its row returns the live job's id with created = false.
-- Returns one row per input job, in input order: (ord, job_id, created).
-- The insert trigger sends one NOTIFY per queue.
CREATE OR REPLACE FUNCTION enqueue_jobs(
    p_tasks text[],
    p_payloads jsonb[],
    p_queues text[] DEFAULT NULL,
    p_priorities integer[] DEFAULT NULL,
    p_run_at timestamptz[] DEFAULT NULL,
    p_max_attempts integer[] DEFAULT NULL,
    p_timeout_seconds double precision[] DEFAULT NULL,
    p_unique_keys text[] DEFAULT NULL,
    p_retry_base double precision[] DEFAULT NULL,
    p_retry_factor double precision[] DEFAULT NULL,
    p_retry_max double precision[] DEFAULT NULL,
    p_retry_jitter double precision[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (ord integer, job_id bigint, created boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_n integer := coalesce(cardinality(p_tasks), 0);
    v_ord integer[];
    v_ids bigint[];
    v_missing integer[];
    v_k integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF coalesce(cardinality(p_payloads), 0) <> v_n
       OR cardinality(p_queues) <> v_n OR cardinality(p_priorities) <> v_n
       OR cardinality(p_run_at) <> v_n OR cardinality(p_max_attempts) <> v_n
       OR cardinality(p_timeout_seconds) <> v_n OR cardinality(p_unique_keys) <> v_n
       OR cardinality(p_retry_base) <> v_n OR cardinality(p_retry_factor) <> v_n
       OR cardinality(p_retry_max) <> v_n OR cardinality(p_retry_jitter) <> v_n THEN
        RAISE EXCEPTION 'enqueue_jobs: every array must have % elements, one per job', v_n
            USING ERRCODE = 'PQ004';
    END IF;

    -- Ids are drawn before the insert so that each inserted row can be matched
    -- back to its input position (RETURNING cannot return the input ordinal).
    WITH input AS MATERIALIZED (
        SELECT t.*, nextval('jobs_id_seq'::regclass) AS new_id
        FROM unnest(p_tasks, p_payloads, p_queues, p_priorities, p_run_at, p_max_attempts,
                    p_timeout_seconds, p_unique_keys, p_retry_base, p_retry_factor,
                    p_retry_max, p_retry_jitter)
             WITH ORDINALITY AS t(task, payload, queue, priority, run_at, max_attempts,
                                  timeout_seconds, unique_key, retry_base, retry_factor,
                                  retry_max, retry_jitter, i)
    ), inserted AS (
        INSERT INTO jobs (id, task, payload, queue, priority, status, run_at, max_attempts,
                          timeout, unique_key, retry_base_seconds, retry_factor,
                          retry_max_seconds, retry_jitter, created_at, updated_at)
        SELECT new_id, task, coalesce(payload, '{}'::jsonb), coalesce(queue, 'default'),
               coalesce(priority, 3), 'queued', coalesce(run_at, p_now),
               coalesce(max_attempts, 3), make_interval(secs => timeout_seconds),
               unique_key, retry_base, retry_factor, retry_max, retry_jitter, p_now, p_now
        FROM input
        ORDER BY i
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('waiting', 'queued', 'running', 'retrying')
            DO NOTHING
        RETURNING id
    )
    SELECT array_agg(input.i::integer ORDER BY input.i),
           array_agg(inserted.id ORDER BY input.i)
    INTO v_ord, v_ids
    FROM input LEFT JOIN inserted ON inserted.id = input.new_id;

    -- Rows skipped by ON CONFLICT: find the live job that holds the key. This is
    -- a new statement, so it sees a conflicting job committed by another
    -- transaction meanwhile, and the jobs inserted above.
    v_missing := ARRAY(SELECT s.k FROM generate_subscripts(v_ids, 1) AS s(k) WHERE v_ids[s.k] IS NULL);
    IF cardinality(v_missing) > 0 THEN
        FOREACH v_k IN ARRAY v_missing LOOP
            v_ids[v_k] := (SELECT j.id FROM jobs AS j
                           WHERE j.unique_key = p_unique_keys[v_k]
                             AND j.status IN ('waiting', 'queued', 'running', 'retrying'));
            IF v_ids[v_k] IS NULL THEN
                -- The live holder finished between the insert and this lookup.
                RAISE EXCEPTION 'enqueue_jobs: unique_key % changed hands during enqueue; retry the call', p_unique_keys[v_k]
                    USING ERRCODE = '40001';
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY
        SELECT s.k, v_ids[s.k], NOT (s.k = ANY (v_missing))
        FROM generate_series(1, v_n) AS s(k);
END
$$;
