-- pgq.attach_group_keys(p_job_ids, p_group_keys)
-- Gives jobs their group (jobs.group_key) right after enqueue_jobs or
-- enqueue_jobs_v2 (unique keys, parents), which take no group themselves.
-- pgq calls it in the enqueue's own transaction, so no worker can claim one of
-- the jobs before its group is set. Only jobs this same transaction created
-- (their row's xmin is the current transaction), not claimed yet (waiting or
-- queued) and without a group are changed: a unique key that resolved to an
-- existing job leaves that job as it is. A NULL key leaves its job alone.
-- Returns how many jobs got a group. Arrays of different lengths raise PQ004;
-- a key longer than 200 characters (or empty) is refused by jobs_group_key_length (23514).
-- Example: SELECT pgq.attach_group_keys(ARRAY[42, 43], ARRAY['tenant-a', 'tenant-b']);
CREATE OR REPLACE FUNCTION attach_group_keys(p_job_ids bigint[], p_group_keys text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count integer;
BEGIN
    IF coalesce(cardinality(p_job_ids), 0) <> coalesce(cardinality(p_group_keys), 0) THEN
        RAISE EXCEPTION 'attach_group_keys: p_job_ids and p_group_keys must have the same length (got %, %)',
            coalesce(cardinality(p_job_ids), 0), coalesce(cardinality(p_group_keys), 0) USING ERRCODE = 'PQ004';
    END IF;
    UPDATE jobs AS j SET group_key = k.group_key
    FROM unnest(p_job_ids, p_group_keys) AS k(id, group_key)
    WHERE j.id = k.id AND k.group_key IS NOT NULL AND j.group_key IS NULL
      AND j.status IN ('waiting', 'queued') AND j.xmin = pg_current_xact_id()::xid;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION attach_group_keys(bigint[], text[]) IS
    'Set the group of jobs this transaction just enqueued through a function (not claimed, without a group); returns how many changed. PQ004: arrays of different lengths.';
