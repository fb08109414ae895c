"""State snapshots: state_snapshots holds compressed FULL / INCREMENTAL snapshots.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02

Issue 12. ``state_snapshots`` was an empty placeholder (a ``state_data`` jsonb);
pgq.snapshots now stores each snapshot as zlib-compressed sections of COPY text
(format version 1, docs/snapshots.md), with what a restore must check in
columns of their own:

- The table is created again (it was empty and nothing referenced it; a DBA's grants
  on it are not kept): ``state_data`` is gone, ``body`` (bytea) and ``body_sha256``
  take its place.
- ``snapshot_type`` is FULL or INCREMENTAL; who took it is ``origin``
  (manual, auto: the maintenance leader, import: a file from elsewhere).
- ``full_snapshot_id``: the FULL an INCREMENTAL chain starts from; the chain
  is deleted with its FULL (ON DELETE CASCADE, also for ``base_snapshot_id``).
- ``format_version``, ``schema_revision``, ``db_snapshot`` (pg_current_snapshot()
  of the capture) say what the body is and where it came from.
- Functions ``save_snapshot`` and ``prune_snapshots`` (db/functions/), and
  ``db/roles/010.sql`` (the worker role runs AUTO snapshots and retention).

The downgrade deletes every snapshot (their body cannot be put back into the old
jsonb column) and restores the table's previous shape.
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = """
DROP TABLE state_snapshots;
CREATE TABLE state_snapshots (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    snapshot_type    text        NOT NULL,
    origin           text        NOT NULL DEFAULT 'manual',
    base_snapshot_id uuid        REFERENCES state_snapshots (id) ON DELETE CASCADE,
    full_snapshot_id uuid        REFERENCES state_snapshots (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    format_version   integer     NOT NULL,
    schema_revision  text        NOT NULL,
    db_snapshot      text        NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    body             bytea       NOT NULL,
    body_sha256      text        NOT NULL,
    CONSTRAINT state_snapshots_type CHECK (snapshot_type IN ('FULL', 'INCREMENTAL')),
    CONSTRAINT state_snapshots_origin CHECK (origin IN ('manual', 'auto', 'import')),
    CONSTRAINT state_snapshots_chain CHECK (
        (snapshot_type = 'FULL' AND base_snapshot_id IS NULL AND full_snapshot_id IS NULL)
        OR (snapshot_type = 'INCREMENTAL' AND base_snapshot_id IS NOT NULL AND full_snapshot_id IS NOT NULL)),
    CONSTRAINT state_snapshots_format_version_positive CHECK (format_version >= 1)
);
-- Point-in-time restore: the latest snapshot at or before a time.
CREATE INDEX state_snapshots_created_at_idx ON state_snapshots (created_at DESC);
-- Retention and chain resolution find a FULL's chain by full_snapshot_id (the cascade too).
CREATE INDEX state_snapshots_full_snapshot_idx ON state_snapshots (full_snapshot_id);
-- The cascade of base_snapshot_id.
CREATE INDEX state_snapshots_base_snapshot_idx ON state_snapshots (base_snapshot_id);
COMMENT ON TABLE state_snapshots IS
    'FULL and INCREMENTAL snapshots of queue state (non-terminal jobs, dependency edges, workers), for restore.';
COMMENT ON COLUMN state_snapshots.id IS 'Snapshot id.';
COMMENT ON COLUMN state_snapshots.snapshot_type IS
    'FULL (the whole state) or INCREMENTAL (what changed since base_snapshot_id, deletions included).';
COMMENT ON COLUMN state_snapshots.origin IS 'manual (pgq snapshot create), auto (the maintenance leader) or import (a file).';
COMMENT ON COLUMN state_snapshots.base_snapshot_id IS 'For INCREMENTAL: the snapshot it follows (its parent).';
COMMENT ON COLUMN state_snapshots.full_snapshot_id IS 'For INCREMENTAL: the FULL snapshot its chain starts from.';
COMMENT ON COLUMN state_snapshots.created_at IS 'When the snapshot was taken (database time of its transaction).';
COMMENT ON COLUMN state_snapshots.format_version IS 'Version of the body''s format (pgq.snapshots.FORMAT_VERSION).';
COMMENT ON COLUMN state_snapshots.schema_revision IS 'Alembic revision of the schema the snapshot was taken from.';
COMMENT ON COLUMN state_snapshots.db_snapshot IS 'pg_current_snapshot() of the capture, as text: which transactions it saw.';
COMMENT ON COLUMN state_snapshots.metadata IS
    'Counts (jobs, jobs per status, edges, workers), sizes, chain position and the change counter at capture.';
COMMENT ON COLUMN state_snapshots.body IS 'zlib-compressed sections of COPY text rows (docs/snapshots.md).';
COMMENT ON COLUMN state_snapshots.body_sha256 IS 'SHA-256 of the uncompressed body, hex.';
"""

DROPS = """
DROP FUNCTION prune_snapshots(interval, timestamptz);
DROP FUNCTION save_snapshot(uuid, text, text, uuid, uuid, integer, text, text, bytea, text, jsonb, timestamptz);
DROP TABLE state_snapshots;
-- As revision 0001 created it.
CREATE TABLE state_snapshots (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    snapshot_type    text        NOT NULL,
    base_snapshot_id uuid        REFERENCES state_snapshots (id) ON DELETE SET NULL,
    state_data       jsonb       NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT state_snapshots_type CHECK (snapshot_type IN ('FULL', 'INCREMENTAL', 'AUTO'))
);
CREATE INDEX state_snapshots_created_at_idx ON state_snapshots (created_at DESC);
COMMENT ON TABLE state_snapshots IS 'FULL, INCREMENTAL and AUTO snapshots of queue state, for restore.';
COMMENT ON COLUMN state_snapshots.id IS 'Snapshot id.';
COMMENT ON COLUMN state_snapshots.snapshot_type IS 'FULL, INCREMENTAL or AUTO.';
COMMENT ON COLUMN state_snapshots.base_snapshot_id IS 'For INCREMENTAL: the snapshot it follows.';
COMMENT ON COLUMN state_snapshots.state_data IS 'The captured state (jobs, dependencies, workers).';
COMMENT ON COLUMN state_snapshots.metadata IS 'Counts and settings at capture time.';
COMMENT ON COLUMN state_snapshots.created_at IS 'When the snapshot was taken (database time).';
"""


def upgrade() -> None:
    enter_schema()
    op.execute(TABLE)
    run_sql_file("functions/save_snapshot/001.sql")
    run_sql_file("functions/prune_snapshots/001.sql")
    run_sql_file("roles/010.sql")


def downgrade() -> None:
    enter_schema()
    # The worker role's grant on job_dependencies (state_snapshots' goes with the table,
    # the functions' with the functions).
    op.execute("""
DO $roles$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_schema() || '_worker') THEN
        EXECUTE format('REVOKE SELECT ON job_dependencies FROM %I', current_schema() || '_worker');
    END IF;
END
$roles$;
""")
    op.execute(DROPS)
