-- pgq.enqueue_schedule_ticks(p_name, p_due_tick, p_latest_tick, p_ticks, p_next_tick, p_now)
-- Transition: (new) -> queued, for the ticks of a periodic schedule. The
-- maintenance leader calls it with the schedule's next_tick as it read it
-- (p_due_tick), the latest due tick (p_latest_tick, at most p_now), the ticks
-- to enqueue (p_ticks, ascending, between the two; the catch-up policy's
-- choice, empty when it skips them all) and the first tick after p_now
-- (p_next_tick), all computed with croniter.
-- In one transaction it enqueues one job per tick and moves the schedule's
-- last_tick (to p_latest_tick: later ticks only) and next_tick on: a leader that dies before the commit leaves
-- both untouched (the next leader enqueues the same ticks: no gap), one that
-- dies after leaves both done (no double).
-- Guards: the schedule row is locked and must still be enabled with next_tick =
-- p_due_tick (otherwise another leader already did it, or a DBA edited it:
-- nothing is enqueued, NULL is returned); a tick at or before last_tick is
-- never enqueued again; each job carries the unique key
-- 'pgq.cron:<name>@<tick in UTC>', so a live job of the same tick is returned
-- instead of a second one.
-- Returns the ids of the tick jobs (existing ones for ticks already live), or
-- NULL when the call lost the race (the schedule moved on).
-- Raises PQ004 for ticks not ascending or outside [p_due_tick, p_latest_tick],
-- p_latest_tick after p_now, or p_next_tick not after p_now.
CREATE OR REPLACE FUNCTION enqueue_schedule_ticks(
    p_name text,
    p_due_tick timestamptz,
    p_latest_tick timestamptz,
    p_ticks timestamptz[],
    p_next_tick timestamptz,
    p_now timestamptz DEFAULT now()
) RETURNS bigint[]
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_s schedules%ROWTYPE;
    v_ticks timestamptz[];
    v_n integer;
    v_ids bigint[];
BEGIN
    IF p_name IS NULL OR p_due_tick IS NULL OR p_latest_tick IS NULL OR p_ticks IS NULL OR p_next_tick IS NULL
       OR p_now IS NULL THEN
        RAISE EXCEPTION 'enqueue_schedule_ticks: no argument may be NULL' USING ERRCODE = 'PQ004';
    END IF;
    IF p_ticks <> ARRAY(SELECT DISTINCT t FROM unnest(p_ticks) AS t ORDER BY t)
       OR p_latest_tick < p_due_tick OR p_latest_tick > p_now
       OR EXISTS (SELECT 1 FROM unnest(p_ticks) AS t WHERE t > p_latest_tick OR t < p_due_tick)
       OR p_next_tick <= p_now THEN
        RAISE EXCEPTION 'enqueue_schedule_ticks: ticks must ascend from p_due_tick to p_latest_tick, at most '
                        'p_now (%), and p_next_tick (%) come after p_now', p_now, p_next_tick
            USING ERRCODE = 'PQ004';
    END IF;
    SELECT * INTO v_s FROM schedules WHERE name = p_name FOR UPDATE;
    IF NOT FOUND OR NOT v_s.enabled OR v_s.next_tick IS DISTINCT FROM p_due_tick THEN
        RETURN NULL;
    END IF;
    v_ticks := ARRAY(SELECT t FROM unnest(p_ticks) AS t
                     WHERE v_s.last_tick IS NULL OR t > v_s.last_tick ORDER BY t);
    v_n := cardinality(v_ticks);
    IF v_n > 0 THEN
        v_ids := ARRAY(
            SELECT e.job_id FROM enqueue_jobs(
                array_fill(v_s.task, ARRAY[v_n]),
                array_fill(v_s.payload, ARRAY[v_n]),
                array_fill(v_s.queue, ARRAY[v_n]),
                array_fill(v_s.priority::integer, ARRAY[v_n]),
                array_fill(p_now, ARRAY[v_n]),
                array_fill(v_s.max_attempts, ARRAY[v_n]),
                array_fill(NULL::double precision, ARRAY[v_n]),
                ARRAY(SELECT 'pgq.cron:' || v_s.name || '@'
                             || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                      FROM unnest(v_ticks) WITH ORDINALITY AS u(t, i) ORDER BY i),
                array_fill(NULL::double precision, ARRAY[v_n]), array_fill(NULL::double precision, ARRAY[v_n]),
                array_fill(NULL::double precision, ARRAY[v_n]), array_fill(NULL::double precision, ARRAY[v_n]),
                p_now) AS e
            ORDER BY e.ord);
    END IF;
    UPDATE schedules
    SET last_tick = greatest(last_tick, p_latest_tick),
        next_tick = p_next_tick,
        last_job_id = coalesce(v_ids[v_n], last_job_id),
        ticked_at = p_now
    WHERE name = p_name;
    RETURN coalesce(v_ids, '{}');
END
$$;
COMMENT ON FUNCTION enqueue_schedule_ticks(text, timestamptz, timestamptz, timestamptz[], timestamptz, timestamptz) IS
    'Maintenance leader: enqueue the ticks of a periodic schedule and move its last_tick/next_tick on, in one transaction, only if next_tick is still p_due_tick; the job ids, or NULL when another leader did it.';
