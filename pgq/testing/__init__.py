"""pgq's test kit for users' own tests (``pip install 'pgq[test]'``).

With pytest, the plugin (``pgq.testing.plugin``, registered as ``pgq``) gives
each test a fresh migrated database cloned from a template (``pgq_db_url``),
a queue on it (``pgq_queue``) and its clock (``pgq_clock``). The helpers work
with or without pytest: ``run_until_empty`` runs the due jobs in-process,
``enqueued`` / ``assert_enqueued`` read back what was enqueued, ``QueueClock``
lets time pass for delayed jobs, retries and schedules, and ``use_database``
points an application's queue at a test database. pgq's own fixtures (in
``tests/``) are built on the same pieces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pgq.errors import ValidationError
from pgq.testing.clock import QueueClock
from pgq.testing.enqueued import EnqueuedJob, assert_enqueued, enqueued
from pgq.testing.run import Attempt, RunLimitExceeded, RunResult, run_until_empty

if TYPE_CHECKING:
    from pgq.queue import Queue


@contextlib.contextmanager
def use_database(queue: Queue, database_url: str) -> Iterator[Queue]:
    """Point ``queue`` (an application's ``pgq.Queue``, tasks and all) at ``database_url`` while the
    block runs; its settings come back afterwards.

    The Redis accelerator, the execution memory's Qdrant URL and a separate LISTEN
    URL are switched off inside the block: they would point at the application's
    services, not the test's. The pool is closed on the way in and out.

    Raises:
        ValidationError: ``queue`` is not a ``pgq.Queue`` or the URL is not a string.
    """
    from pgq.queue import Queue

    if not isinstance(queue, Queue):
        raise ValidationError(f"queue must be a pgq.Queue, got {type(queue).__name__}")
    if not isinstance(database_url, str) or not database_url:
        raise ValidationError("database_url must be a non-empty string")
    previous = queue.settings
    queue.close()
    queue.settings = previous.replace(database_url=database_url, redis_url=None, qdrant_url=None,
                                      listen_database_url=None)
    try:
        yield queue
    finally:
        queue.close()
        queue.settings = previous


__all__ = [
    "Attempt",
    "EnqueuedJob",
    "QueueClock",
    "RunLimitExceeded",
    "RunResult",
    "assert_enqueued",
    "enqueued",
    "run_until_empty",
    "use_database",
]
