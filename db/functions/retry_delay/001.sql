-- pgq.retry_delay(p_attempt, p_base_seconds, p_factor, p_max_seconds)
-- Backoff before the next attempt, in seconds, without jitter:
--   min(base * factor^(attempt - 1), max)
-- NULL arguments take the defaults (1 s, 2, 300 s). Computed in log space so a
-- large attempt number caps at p_max_seconds instead of overflowing.
-- Example: SELECT pgq.retry_delay(4);  -- 8
CREATE OR REPLACE FUNCTION retry_delay(
    p_attempt integer,
    p_base_seconds double precision DEFAULT NULL,
    p_factor double precision DEFAULT NULL,
    p_max_seconds double precision DEFAULT NULL
) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN f <= 1 OR (greatest(p_attempt, 1) - 1) * ln(f) < ln(m / b)
            THEN least(m, b * power(f, greatest(p_attempt, 1) - 1))
        ELSE m
    END
    FROM (SELECT coalesce(p_base_seconds, 1.0) AS b,
                 coalesce(p_factor, 2.0) AS f,
                 greatest(coalesce(p_max_seconds, 300.0), coalesce(p_base_seconds, 1.0)) AS m) AS d
$$;
