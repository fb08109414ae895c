-- pgq.save_snapshot(p_id, p_type, p_origin, p_base_snapshot_id, p_full_snapshot_id, p_format_version,
--                   p_schema_revision, p_db_snapshot, p_body, p_body_sha256, p_metadata, p_created_at)
-- Stores one snapshot taken by pgq.snapshots (a plain INSERT into state_snapshots),
-- so that the maintenance leader, running as <schema>_worker, can store AUTO
-- snapshots without the right to write the table itself. The body is opaque
-- here: zlib-compressed sections of COPY text (format in docs/snapshots.md);
-- the caller checked its SHA-256. Returns nothing; a bad value stops at the
-- table's CHECK constraints (23514).
CREATE OR REPLACE FUNCTION save_snapshot(
    p_id uuid,
    p_type text,
    p_origin text,
    p_base_snapshot_id uuid,
    p_full_snapshot_id uuid,
    p_format_version integer,
    p_schema_revision text,
    p_db_snapshot text,
    p_body bytea,
    p_body_sha256 text,
    p_metadata jsonb,
    p_created_at timestamptz
) RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    INSERT INTO state_snapshots (id, snapshot_type, origin, base_snapshot_id, full_snapshot_id, format_version,
                                 schema_revision, db_snapshot, body, body_sha256, metadata, created_at)
    VALUES (p_id, p_type, p_origin, p_base_snapshot_id, p_full_snapshot_id, p_format_version,
            p_schema_revision, p_db_snapshot, p_body, p_body_sha256, p_metadata, p_created_at);
$$;
COMMENT ON FUNCTION save_snapshot(uuid, text, text, uuid, uuid, integer, text, text, bytea, text, jsonb, timestamptz) IS
    'Store one snapshot taken by pgq.snapshots (FULL or INCREMENTAL) in state_snapshots.';
