"""What the groups of statements share: the schema, and the columns that build a ``Job``.

Each group (``enqueue``, ``worker``, ``control``, ``maintenance``) extends
``QueriesBase`` and builds its own statements in its ``__init__``, the schema
quoted by psycopg, next to the methods that send them. ``pgq.queries.Queries``
combines the groups; running the statements is each group's.
"""

from __future__ import annotations

from pgq.job import JOB_COLUMNS

# The payload comes as text and is parsed by ``job_from_row``: psycopg's jsonb
# loader decodes bytes per row and cost a claim of 100 jobs ~0.25 ms more.
_JOB_SELECT = ", ".join("payload::text" if c == "payload" else c for c in JOB_COLUMNS)


class QueriesBase:
    """The pgq schema a group of statements is built for."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
