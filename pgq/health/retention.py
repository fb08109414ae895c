"""Retention of health samples: the maintenance leader deletes those past ``PGQ_HEALTH_RETENTION_SECONDS``.

In batches of ``PGQ_PRUNE_BATCH_SIZE``, each its own short transaction that
takes the leader lock again (``prune_health_logs``), until none is left or
the round's time budget is spent; what is left waits for the next round.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgq.clock import Clock
    from pgq.health.queries import HealthQueries
    from pgq.settings import Settings

log = logging.getLogger("pgq.maintenance")


def prune_samples(conn: Any, settings: Settings, queries: HealthQueries, clock: Clock, deadline: float) -> int:
    """Delete health samples past the retention, in batches, until ``deadline`` (monotonic).

    At least one batch runs whatever the deadline (so samples never pile up
    behind a busy job pruning). Returns the number of samples deleted.
    """
    batch_size = settings.prune_batch_size
    deleted_total = 0
    while True:
        with conn.transaction():
            deleted = queries.prune_health_logs_if_leader(conn, settings.health_retention_seconds, batch_size)
        if deleted is None:  # another worker leads now
            break
        deleted_total += deleted
        if deleted < batch_size:
            break
        if clock.monotonic() >= deadline:
            log.warning("maintenance: deleted %d health sample(s); the time budget ran out with more to delete, "
                        "left for the next round", deleted_total)
            break
    if deleted_total:
        log.info("maintenance: deleted %d health sample(s) older than PGQ_HEALTH_RETENTION_SECONDS", deleted_total)
    return deleted_total
