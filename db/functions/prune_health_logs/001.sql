-- pgq.prune_health_logs(p_older_than, p_limit, p_now)
-- Deletes worker_health_logs rows logged more than p_older_than before p_now,
-- at most p_limit per call (one short transaction each: call again while it
-- returns p_limit). The rows are found through the BRIN index on logged_at
-- (they are appended in time order), so a call reads the old block ranges,
-- not the table. The maintenance leader calls it each round with
-- PGQ_HEALTH_RETENTION_SECONDS, within the pruning time budget.
-- Returns the number of rows deleted.
-- Example: SELECT pgq.prune_health_logs(interval '1 day');
CREATE OR REPLACE FUNCTION prune_health_logs(
    p_older_than interval,
    p_limit integer DEFAULT 10000,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_health_logs: p_older_than must not be negative and p_limit must be positive'
            USING ERRCODE = 'PQ004';
    END IF;
    WITH old AS (
        SELECT l.id FROM worker_health_logs AS l
        WHERE l.logged_at < p_now - p_older_than
        LIMIT p_limit
    ), deleted AS (
        DELETE FROM worker_health_logs AS l USING old AS o WHERE l.id = o.id RETURNING l.id
    )
    SELECT count(*) INTO v_count FROM deleted;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION prune_health_logs(interval, integer, timestamptz) IS
    'Deletes up to p_limit worker_health_logs rows logged more than p_older_than ago; returns how many.';
