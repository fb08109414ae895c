-- pgq.prune_snapshots(p_keep, p_now)
-- Retention of state_snapshots: deletes whole chains (a FULL snapshot and the
-- INCREMENTALs built on it, which go with it by ON DELETE CASCADE) whose newest
-- member was taken before p_now - p_keep. The chain of the newest FULL snapshot
-- is always kept, however old, so that a restore always has something to start
-- from. An INCREMENTAL never outlives its FULL: a chain is kept or deleted whole,
-- so every kept snapshot can still be resolved.
-- Returns the number of snapshots deleted (chain members included).
CREATE OR REPLACE FUNCTION prune_snapshots(
    p_keep interval,
    p_now timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_doomed uuid[];
    v_count integer;
BEGIN
    SELECT coalesce(array_agg(f.id), '{}') INTO v_doomed
    FROM state_snapshots AS f
    WHERE f.snapshot_type = 'FULL'
      AND f.created_at < p_now - p_keep
      AND f.id <> (SELECT n.id FROM state_snapshots AS n WHERE n.snapshot_type = 'FULL'
                   ORDER BY n.created_at DESC, n.id DESC LIMIT 1)
      AND NOT EXISTS (SELECT 1 FROM state_snapshots AS i
                      WHERE i.full_snapshot_id = f.id AND i.created_at >= p_now - p_keep);
    SELECT count(*) INTO v_count FROM state_snapshots
    WHERE id = ANY (v_doomed) OR full_snapshot_id = ANY (v_doomed);
    DELETE FROM state_snapshots WHERE id = ANY (v_doomed);
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION prune_snapshots(interval, timestamptz) IS
    'Retention: delete snapshot chains (a FULL and its INCREMENTALs) whose newest member is older than p_keep; the newest FULL chain is always kept. Returns snapshots deleted.';
