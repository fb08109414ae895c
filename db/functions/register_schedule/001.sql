-- pgq.register_schedule(p_name, p_cron, p_timezone, p_task, p_payload, p_queue,
--                       p_priority, p_max_attempts, p_catch_up, p_catch_up_limit,
--                       p_misfire_grace_seconds, p_next_tick, p_now)
-- Creates or updates the periodic schedule p_name (table schedules). Idempotent:
-- registering the same definition again (every worker process of an app does,
-- at start) changes nothing, and keeps the schedule's ticks (last_tick,
-- next_tick). A changed definition replaces the old one, enables the schedule
-- and takes p_next_tick (the first tick of the new expression after p_now,
-- computed by the caller with croniter: SQL does not parse cron expressions);
-- NULL lets the maintenance leader compute it.
-- Returns 'created', 'updated' or 'unchanged'.
-- Raises 23514 (a schedules_* constraint) for a bad name, expression length,
-- catch-up policy or limit, PQ004 for a time zone Postgres does not know.
-- Example: SELECT pgq.register_schedule('nightly-report', '0 3 * * *', 'Europe/Paris', 'report');
CREATE OR REPLACE FUNCTION register_schedule(
    p_name text,
    p_cron text,
    p_timezone text,
    p_task text,
    p_payload jsonb DEFAULT '{}'::jsonb,
    p_queue text DEFAULT 'default',
    p_priority integer DEFAULT 3,
    p_max_attempts integer DEFAULT 3,
    p_catch_up text DEFAULT 'once',
    p_catch_up_limit integer DEFAULT 100,
    p_misfire_grace_seconds double precision DEFAULT 60,
    p_next_tick timestamptz DEFAULT NULL,
    p_now timestamptz DEFAULT now()
) RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_outcome text;
BEGIN
    IF p_timezone IS NULL OR NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_timezone) THEN
        RAISE EXCEPTION 'register_schedule: unknown time zone %', p_timezone
            USING ERRCODE = 'PQ004', HINT = 'Use an IANA name such as UTC or Europe/Paris.';
    END IF;
    INSERT INTO schedules AS s (name, cron, timezone, task, payload, queue, priority, max_attempts,
                                catch_up, catch_up_limit, misfire_grace_seconds, next_tick,
                                created_at, updated_at)
    VALUES (p_name, p_cron, p_timezone, p_task, p_payload, p_queue, p_priority, p_max_attempts,
            p_catch_up, p_catch_up_limit, p_misfire_grace_seconds, p_next_tick, p_now, p_now)
    ON CONFLICT (name) DO UPDATE
        SET cron = excluded.cron, timezone = excluded.timezone, task = excluded.task,
            payload = excluded.payload, queue = excluded.queue, priority = excluded.priority,
            max_attempts = excluded.max_attempts, catch_up = excluded.catch_up,
            catch_up_limit = excluded.catch_up_limit, misfire_grace_seconds = excluded.misfire_grace_seconds,
            next_tick = excluded.next_tick, enabled = true, updated_at = excluded.updated_at
        WHERE (s.cron, s.timezone, s.task, s.payload, s.queue, s.priority, s.max_attempts,
               s.catch_up, s.catch_up_limit, s.misfire_grace_seconds, s.enabled)
              IS DISTINCT FROM
              (excluded.cron, excluded.timezone, excluded.task, excluded.payload, excluded.queue,
               excluded.priority, excluded.max_attempts, excluded.catch_up, excluded.catch_up_limit,
               excluded.misfire_grace_seconds, true)
    RETURNING CASE WHEN s.xmax = 0 THEN 'created' ELSE 'updated' END
    INTO v_outcome;
    RETURN coalesce(v_outcome, 'unchanged');
END
$$;
COMMENT ON FUNCTION register_schedule(text, text, text, text, jsonb, text, integer, integer, text, integer,
                                      double precision, timestamptz, timestamptz) IS
    'Create or update a periodic schedule (idempotent: the same definition changes nothing and keeps its ticks); returns created, updated or unchanged.';
