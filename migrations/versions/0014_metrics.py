"""Metrics and tracing: collect_metrics() for the queue exporter, jobs.trace_context.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

Issue 11, items 7 and 8.

- ``collect_metrics(p_now)`` (db/functions/collect_metrics/001.sql): everything
  ``pgq metrics`` publishes in one read of the partial indexes and the workers.
- ``jobs.trace_context`` (jsonb, NULL): the W3C trace context of the producer's
  ``pgq.enqueue`` span, written only when tracing is on, so that a worker's
  ``pgq.attempt`` span continues the producer's trace. NULL costs no storage.
  ``attach_trace_context()`` stores it for the jobs enqueued through a function
  (unique keys, parents), in the enqueue's transaction.
- ``db/roles/013.sql``: EXECUTE on collect_metrics for both roles, INSERT of the
  new column and attach_trace_context for the producer.

The downgrade drops both (trace contexts are lost: they only link spans).
"""

from alembic import op

from pgq.migrate import enter_schema, run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMN = """
ALTER TABLE jobs ADD COLUMN trace_context jsonb;
COMMENT ON COLUMN jobs.trace_context IS
    'W3C trace context (traceparent, tracestate) of the enqueue, when the producer traced it; NULL otherwise.';
"""


def upgrade() -> None:
    enter_schema()
    op.execute(COLUMN)
    run_sql_file("functions/collect_metrics/001.sql")
    run_sql_file("functions/attach_trace_context/001.sql")
    run_sql_file("roles/013.sql")


def downgrade() -> None:
    enter_schema()
    op.execute("DROP FUNCTION collect_metrics(timestamptz)")
    op.execute("DROP FUNCTION attach_trace_context(bigint[], jsonb)")
    # A dropped column keeps its grants (as a dropped attribute): revoke first.
    op.execute("""
DO $roles$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_schema() || '_producer') THEN
        EXECUTE format('REVOKE INSERT (trace_context) ON jobs FROM %I', current_schema() || '_producer');
    END IF;
END
$roles$;
""")
    op.execute("ALTER TABLE jobs DROP COLUMN trace_context")
