"""How the Redis mirror compares with Postgres: the report behind ``pgq status``.

Reads only: ids per ready set against runnable jobs per queue, ids held by
workers, heartbeat keys, the age of the last reconciler pass and the lag of its
horizon. It opens a client of its own and never changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgq.errors import RedisUnavailable
from pgq.queries import MirrorQueries
from pgq.redis.client import RedisClient
from pgq.redis.reconciler import age
from pgq.settings import Settings


@dataclass(frozen=True)
class RedisHealth:
    """The Redis mirror compared with Postgres, for ``pgq status``."""

    reachable: bool
    built: bool = False
    error: str | None = None
    queues: dict[str, tuple[int, int]] = field(default_factory=dict)  # queue -> (ids in Redis, runnable in Postgres)
    held_by_workers: int = 0
    heartbeat_keys: int = 0
    seconds_since_pass: float | None = None
    horizon_lag_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable, "built": self.built, "error": self.error,
            "queues": {q: {"in_redis": r, "runnable_in_postgres": p} for q, (r, p) in self.queues.items()},
            "held_by_workers": self.held_by_workers,
            "heartbeat_keys": self.heartbeat_keys, "seconds_since_pass": self.seconds_since_pass,
            "horizon_lag_seconds": self.horizon_lag_seconds,
        }


def redis_health(settings: Settings, conn: Any) -> RedisHealth:
    """Compare the mirror with Postgres: ids per queue, held ids, pass age and watermark lag.

    Reads the runnable set of every queue (one aggregate query), so it is meant
    for ``pgq status``, not for a hot loop.
    """
    client = RedisClient(settings)
    try:
        queries = MirrorQueries(settings.schema)
        runnable = queries.runnable_counts(conn)
        now = queries.now(conn)
        try:
            state = client.state()
            names = sorted(set(client.queues()) | set(runnable))
            sizes = client.sizes(names)
            held, beats = client.counts()
        except RedisUnavailable as exc:
            return RedisHealth(False, error=str(exc), queues={q: (0, n) for q, n in runnable.items()})
        built = bool(state.get("epoch"))
        return RedisHealth(
            True, built, None, {q: (sizes[q], runnable.get(q, 0)) for q in names}, held, beats,
            age(state.get("reconciled_at"), now) if built else None,
            age(state.get("horizon"), now) if built else None,
        )
    finally:
        client.close()
