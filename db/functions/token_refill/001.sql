-- pgq.token_refill(p_tokens, p_refilled_at, p_limit, p_period, p_now)
-- Internal (lock_policy_jobs, lock_group_jobs, job_blockers): the tokens of a
-- rate limit's bucket at p_now. A bucket holds at most p_limit tokens (a
-- burst of p_limit starts) and refills at p_limit per p_period; it held
-- p_tokens at p_refilled_at (NULL: never used, so full). A claim takes one
-- token per job it starts, so over any long window the starts are at most
-- p_limit per p_period, plus the burst. Time never runs backwards here: a
-- p_now before p_refilled_at adds nothing.
-- Example: SELECT pgq.token_refill(2, now() - interval '1 second', 10, interval '10 seconds', now());  -- 3
CREATE OR REPLACE FUNCTION token_refill(
    p_tokens double precision,
    p_refilled_at timestamptz,
    p_limit integer,
    p_period interval,
    p_now timestamptz
) RETURNS double precision
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN p_tokens IS NULL OR p_refilled_at IS NULL THEN p_limit::double precision
        ELSE least(p_limit::double precision,
                   p_tokens + greatest(0, extract(epoch FROM p_now - p_refilled_at))::double precision
                              * p_limit / extract(epoch FROM p_period)::double precision)
    END
$$;
COMMENT ON FUNCTION token_refill(double precision, timestamptz, integer, interval, timestamptz) IS
    'Internal (rate limits): tokens in a bucket of capacity p_limit refilled at p_limit per p_period, which held p_tokens at p_refilled_at (NULL: full), at p_now.';
