"""The statement that enqueues jobs with parents: ``enqueue_jobs_v2`` (db/functions/enqueue_jobs_v2).

``Queries.enqueue_jobs`` sends a batch here when some job has ``depends_on``;
batches without parents keep their fast paths (single INSERT, COPY). The
specs come ordered parents first (``graph.order_graph``), refs as positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pgq.db import quote_ident
from pgq.job import JobSpec, Ref
from pgq.operations import Op, Statement, operation


class GraphQueries:
    """The job-graph statements for one pgq schema."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self._requeue = f"SELECT * FROM {s}.requeue_dead_jobs_v2(%s::bigint[], %s::text, true)"
        # Delays become run_at by the database clock (now() + delay), as in enqueue_jobs.
        self._enqueue = (
            f"SELECT ord, job_id, created FROM {s}.enqueue_jobs_v2("
            "%s::text[], %s::text[]::jsonb[], %s::text[], %s::int[],"
            " ARRAY(SELECT coalesce(r, now() + make_interval(secs => coalesce(d, 0)))"
            "       FROM unnest(%s::timestamptz[], %s::float8[]) WITH ORDINALITY AS t(r, d, i) ORDER BY i),"
            " %s::int[], %s::float8[], %s::text[], %s::float8[], %s::float8[], %s::float8[], %s::float8[],"
            " %s::int[], %s::bigint[], %s::int[])"
        )

    @operation
    def requeue_dead_with_dependents(self, job_ids: Sequence[int] | None, queue: str | None) -> Op[list[int]]:
        """``requeue_dead_jobs_v2(..., p_with_dependents => true)``: the ids requeued."""
        ids = None if job_ids is None else list(job_ids)
        return [int(r[0]) for r in (yield Statement(self._requeue, [ids, queue]))]

    @operation
    def enqueue_with_parents(self, specs: Sequence[JobSpec]) -> Op[list[tuple[int, bool]]]:
        """Insert ``specs`` (parents before children) with their edges; ``(job_id, created)`` in order."""
        child: list[int] = []
        parent_id: list[int | None] = []
        parent_ord: list[int | None] = []
        for i, spec in enumerate(specs, start=1):
            for parent in spec.depends_on:
                child.append(i)
                parent_id.append(None if isinstance(parent, Ref) else parent)
                parent_ord.append(parent.index + 1 if isinstance(parent, Ref) else None)
        rows = yield Statement(self._enqueue, [
            [s.task for s in specs],
            [s.payload_json for s in specs],
            [s.queue for s in specs],
            [None if s.inherit_priority else s.priority for s in specs],
            [s.run_at for s in specs],
            [s.delay_seconds for s in specs],
            [s.max_attempts for s in specs],
            [s.timeout_seconds for s in specs],
            [s.unique_key for s in specs],
            [s.backoff.base if s.backoff else None for s in specs],
            [s.backoff.factor if s.backoff else None for s in specs],
            [s.backoff.max if s.backoff else None for s in specs],
            [s.backoff.jitter if s.backoff else None for s in specs],
            child, parent_id, parent_ord,
        ])
        rows.sort(key=lambda r: r[0])
        return [(int(r[1]), bool(r[2])) for r in rows]
