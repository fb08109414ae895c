-- pgq.set_schedule_next_tick(p_name, p_next_tick, p_now)
-- The maintenance leader fills in the next tick of a schedule whose next_tick
-- is NULL (registered without one, or set to NULL by a DBA after editing its
-- cron expression), computed with croniter as the first tick after p_now.
-- Enqueues nothing: ticks before p_now are not caught up.
-- Returns false (and changes nothing) when next_tick was set meanwhile.
CREATE OR REPLACE FUNCTION set_schedule_next_tick(
    p_name text,
    p_next_tick timestamptz,
    p_now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_name IS NULL OR p_next_tick IS NULL OR p_now IS NULL OR p_next_tick <= p_now THEN
        RAISE EXCEPTION 'set_schedule_next_tick: p_next_tick (%) must come after p_now (%)', p_next_tick, p_now
            USING ERRCODE = 'PQ004';
    END IF;
    UPDATE schedules SET next_tick = p_next_tick WHERE name = p_name AND next_tick IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION set_schedule_next_tick(text, timestamptz, timestamptz) IS
    'Maintenance leader: set the next tick of a schedule whose next_tick is NULL (first tick after p_now); false when it was set meanwhile.';
