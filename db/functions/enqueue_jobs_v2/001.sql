-- pgq.enqueue_jobs_v2(p_tasks[], p_payloads[], p_queues[], p_priorities[], p_run_at[],
--                     p_max_attempts[], p_timeout_seconds[], p_unique_keys[],
--                     p_retry_base[], p_retry_factor[], p_retry_max[], p_retry_jitter[],
--                     p_dep_child[], p_dep_parent_id[], p_dep_parent_ord[], p_now)
-- Transition: (new) -> waiting, queued or cancelled. enqueue_jobs plus parents:
-- a job graph in one call.
-- The first twelve arrays are enqueue_jobs' (element i describes job i); a
-- NULL priority means "inherit": the highest priority of the job's parents
-- (3 for a job without parents). The edges are three parallel arrays, one
-- element per edge: p_dep_child[k] is the child's position (1-based) in this
-- call, and exactly one of p_dep_parent_id[k] (an existing job's id) and
-- p_dep_parent_ord[k] (the position of an earlier job of this call: parents
-- come before their children, so a cycle cannot be written) names the parent.
-- A job is inserted
--   cancelled  when an existing parent is dead or cancelled (or an earlier job
--              of the call is cancelled for that reason), last_error says which;
--   waiting    when any parent has not completed (every parent in the call);
--   queued     otherwise (no parents, or every parent completed).
-- The existing parents are locked (FOR NO KEY UPDATE, in id order) before their
-- status is read, so a parent completing concurrently either finishes first
-- (and counts as completed here) or waits for this transaction and then sees
-- the new edges when it releases its children (release_waiting_children).
-- A waiting job lends its priority to its unfinished ancestors: their
-- effective_priority is raised to it (never lowered here).
-- Bad graphs raise PQ006 and write nothing: a parent that does not exist (or
-- is not committed yet), a job depending on itself, a reference to a later or
-- out-of-range position, more than 1000 parents for one job, a unique_key on a
-- job that a later job of the call references.
-- A job whose unique_key is held by a live job is not inserted (created =
-- false, the live job's id; its edges are ignored), as in enqueue_jobs.
-- Returns one row per input job, in input order: (ord, job_id, created).
-- Example:
--   SELECT * FROM pgq.enqueue_jobs_v2(ARRAY['extract', 'load'], ARRAY['{}', '{}']::jsonb[],
--       p_dep_child => '{2}', p_dep_parent_ord => '{1}', p_dep_parent_id => '{NULL}');
CREATE OR REPLACE FUNCTION enqueue_jobs_v2(
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
    p_dep_child integer[] DEFAULT NULL,
    p_dep_parent_id bigint[] DEFAULT NULL,
    p_dep_parent_ord integer[] DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (ord integer, job_id bigint, created boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- The planner's estimates for the recursive CTEs are far too high (millions of
-- rows for thousands), which would pay seconds of JIT compilation for milliseconds of work.
SET jit = off
AS $$
DECLARE
    v_n integer := coalesce(cardinality(p_tasks), 0);
    v_e integer := coalesce(cardinality(p_dep_child), 0);
    v_bad text;
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
        RAISE EXCEPTION 'enqueue_jobs_v2: every job array must have % elements, one per job', v_n
            USING ERRCODE = 'PQ004';
    END IF;
    IF cardinality(p_dep_parent_id) <> v_e OR cardinality(p_dep_parent_ord) <> v_e THEN
        RAISE EXCEPTION 'enqueue_jobs_v2: p_dep_child, p_dep_parent_id and p_dep_parent_ord must have the same length'
            USING ERRCODE = 'PQ004';
    END IF;

    -- The edges' shape: positions in range, parents before children, one parent each.
    SELECT CASE
             WHEN e.c IS NULL OR e.c < 1 OR e.c > v_n THEN format('edge %s: child position %s is not a job of this call (1..%s)', e.k, e.c, v_n)
             WHEN (e.pid IS NULL) = (e.pord IS NULL) THEN format('edge %s: give exactly one of p_dep_parent_id and p_dep_parent_ord', e.k)
             WHEN e.pord = e.c THEN format('job %s depends on itself', e.c)
             WHEN e.pord < 1 OR e.pord > v_n THEN format('edge %s: parent position %s is not a job of this call (1..%s)', e.k, e.pord, v_n)
             WHEN e.pord > e.c THEN format('job %s depends on job %s of the same call, which comes after it: list parents before their children (a cycle cannot be enqueued)', e.c, e.pord)
             ELSE format('job %s depends on job %s of the same call, which has a unique_key: enqueue that job first and pass its id', e.c, e.pord)
           END
    INTO v_bad
    FROM unnest(p_dep_child, p_dep_parent_id, p_dep_parent_ord) WITH ORDINALITY AS e(c, pid, pord, k)
    WHERE e.c IS NULL OR e.c < 1 OR e.c > v_n OR (e.pid IS NULL) = (e.pord IS NULL)
       OR e.pord < 1 OR e.pord >= e.c OR p_unique_keys[e.pord] IS NOT NULL
    ORDER BY e.k
    LIMIT 1;
    IF v_bad IS NULL THEN
        SELECT format('job %s has %s parents; at most 1000 are allowed', c, count(DISTINCT coalesce(pid, -pord)))
        INTO v_bad
        FROM unnest(p_dep_child, p_dep_parent_id, p_dep_parent_ord) AS e(c, pid, pord)
        GROUP BY c HAVING count(DISTINCT coalesce(pid, -pord)) > 1000
        ORDER BY c LIMIT 1;
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'enqueue_jobs_v2: %; nothing was enqueued', v_bad USING ERRCODE = 'PQ006';
    END IF;

    -- Lock the existing parents in id order (no deadlock between two enqueues),
    -- then read them in the next statement: a fresh snapshot that includes every
    -- completion committed before the locks were granted.
    PERFORM 1 FROM jobs AS j
    WHERE j.id IN (SELECT DISTINCT u.pid FROM unnest(p_dep_parent_id) AS u(pid) WHERE u.pid IS NOT NULL)
    ORDER BY j.id
    FOR NO KEY UPDATE;
    SELECT format('parent job %s does not exist (or is not committed yet)', min(u.pid))
    INTO v_bad
    FROM unnest(p_dep_parent_id) AS u(pid)
    WHERE u.pid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = u.pid)
    HAVING count(*) > 0;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'enqueue_jobs_v2: %; nothing was enqueued', v_bad USING ERRCODE = 'PQ006';
    END IF;

    WITH RECURSIVE input AS MATERIALIZED (
        SELECT t.*, nextval('jobs_id_seq'::regclass) AS new_id
        FROM unnest(p_tasks, p_payloads, p_queues, p_priorities, p_run_at, p_max_attempts,
                    p_timeout_seconds, p_unique_keys, p_retry_base, p_retry_factor,
                    p_retry_max, p_retry_jitter)
             WITH ORDINALITY AS t(task, payload, queue, priority, run_at, max_attempts,
                                  timeout_seconds, unique_key, retry_base, retry_factor,
                                  retry_max, retry_jitter, i)
    ), edges AS MATERIALIZED (
        SELECT DISTINCT e.c, e.pid, e.pord
        FROM unnest(p_dep_child, p_dep_parent_id, p_dep_parent_ord) AS e(c, pid, pord)
    ), outside AS MATERIALIZED (
        -- The existing parents, as locked above.
        SELECT e.c, j.id, j.status, j.priority FROM edges AS e JOIN jobs AS j ON j.id = e.pid
    ), doomed(o, reason) AS (
        SELECT x.c, format('cancelled: parent job %s is %s', x.id, x.status) FROM outside AS x
        WHERE x.status IN ('dead', 'cancelled')
        UNION
        SELECT e.c, d.reason FROM doomed AS d JOIN edges AS e ON e.pord = d.o
    ), inherited(o, p) AS (
        -- Priorities flow down the call's edges into jobs without one of their own.
        -- UNION keeps one row per (job, priority): at most five per job.
        SELECT i.i, coalesce(i.priority, x.p)
        FROM input AS i
        LEFT JOIN (SELECT o.c, max(o.priority) AS p FROM outside AS o GROUP BY o.c) AS x ON x.c = i.i
        UNION
        SELECT e.c, h.p FROM inherited AS h
        JOIN edges AS e ON e.pord = h.o
        JOIN input AS i ON i.i = e.c
        WHERE i.priority IS NULL AND h.p IS NOT NULL
    ), plan AS (
        -- Joins to grouped sets, not correlated subqueries: a CTE has no index, and
        -- a subquery per job would scan it once per job (quadratic in the call).
        SELECT i.i,
               coalesce(i.priority, h.p, 3) AS priority,
               d.reason,
               (w.c IS NOT NULL) AS blocked
        FROM input AS i
        LEFT JOIN (SELECT h.o, max(h.p) AS p FROM inherited AS h GROUP BY h.o) AS h ON h.o = i.i
        LEFT JOIN (SELECT d.o, min(d.reason) AS reason FROM doomed AS d GROUP BY d.o) AS d ON d.o = i.i
        LEFT JOIN (SELECT DISTINCT e.c FROM edges AS e WHERE e.pord IS NOT NULL
                   UNION
                   SELECT x.c FROM outside AS x WHERE x.status <> 'completed') AS w ON w.c = i.i
    ), inserted AS (
        INSERT INTO jobs (id, task, payload, queue, priority, status, run_at, max_attempts,
                          timeout, unique_key, retry_base_seconds, retry_factor,
                          retry_max_seconds, retry_jitter, last_error, finished_at,
                          created_at, updated_at)
        SELECT i.new_id, i.task, coalesce(i.payload, '{}'::jsonb), coalesce(i.queue, 'default'),
               pl.priority,
               CASE WHEN pl.reason IS NOT NULL THEN 'cancelled'
                    WHEN pl.blocked THEN 'waiting' ELSE 'queued' END::job_status,
               coalesce(i.run_at, p_now), coalesce(i.max_attempts, 3),
               make_interval(secs => i.timeout_seconds), i.unique_key,
               i.retry_base, i.retry_factor, i.retry_max, i.retry_jitter,
               pl.reason, CASE WHEN pl.reason IS NOT NULL THEN p_now END, p_now, p_now
        FROM input AS i JOIN plan AS pl ON pl.i = i.i
        ORDER BY i.i
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('waiting', 'queued', 'running', 'retrying')
            DO NOTHING
        RETURNING id
    )
    SELECT array_agg(inserted.id ORDER BY input.i)
    INTO v_ids
    FROM input LEFT JOIN inserted ON inserted.id = input.new_id;

    -- Rows skipped by ON CONFLICT: the live job holding the key (see enqueue_jobs).
    v_missing := ARRAY(SELECT s.k FROM generate_subscripts(v_ids, 1) AS s(k) WHERE v_ids[s.k] IS NULL);
    FOREACH v_k IN ARRAY v_missing LOOP
        v_ids[v_k] := (SELECT j.id FROM jobs AS j
                       WHERE j.unique_key = p_unique_keys[v_k]
                         AND j.status IN ('waiting', 'queued', 'running', 'retrying'));
        IF v_ids[v_k] IS NULL THEN
            RAISE EXCEPTION 'enqueue_jobs_v2: unique_key % changed hands during enqueue; retry the call', p_unique_keys[v_k]
                USING ERRCODE = '40001';
        END IF;
    END LOOP;

    IF v_e > 0 THEN
        INSERT INTO job_dependencies (parent_id, child_id, created_at)
        SELECT DISTINCT coalesce(e.pid, v_ids[e.pord]), v_ids[e.c], p_now
        FROM unnest(p_dep_child, p_dep_parent_id, p_dep_parent_ord) AS e(c, pid, pord)
        WHERE NOT (e.c = ANY (v_missing));
        PERFORM lend_priority(ARRAY(
            SELECT v_ids[s.k] FROM generate_series(1, v_n) AS s(k) WHERE NOT (s.k = ANY (v_missing))));
    END IF;

    RETURN QUERY
        SELECT s.k, v_ids[s.k], NOT (s.k = ANY (v_missing))
        FROM generate_series(1, v_n) AS s(k);
END
$$;

COMMENT ON FUNCTION enqueue_jobs_v2(text[], jsonb[], text[], integer[], timestamptz[], integer[], double precision[],
                                    text[], double precision[], double precision[], double precision[],
                                    double precision[], integer[], bigint[], integer[], timestamptz) IS
    'Enqueues a batch of jobs with parents (a job graph): waiting until every parent completed, cancelled when one is dead or cancelled; bad graphs raise PQ006 and write nothing. Returns (ord, job_id, created) in input order.';
