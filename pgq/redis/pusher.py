"""The asyncio producers' Redis client: mirror freshly enqueued jobs with ``redis.asyncio``.

``Queue.enqueue_async`` (and ``enqueue_many_async``, ``requeue_dead_async``)
push the jobs they committed, as ``Queue.enqueue`` does through
``RedisClient.push_quietly``: the same ``scripts/offer.lua`` calls
(``offer_calls``), the same registration of the queue, the same circuit
breaker and logging (``guard``/``failure``/``success`` of ``pgq.redis.client``),
on the same topologies (``topology.connect(asyncio=True)``). A Redis failure
only logs: the reconciler mirrors the jobs later. Workers keep the sync client.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from pgq.errors import RedisUnavailable
from pgq.redis.breaker import CircuitBreaker
from pgq.redis.client import (
    failure,
    guard,
    offer_calls,
    open_redis,
    read_script,
    redis_errors,
    registration,
    registration_due,
    success,
)
from pgq.redis.keys import Keys
from pgq.settings import Settings, redact_url

log = logging.getLogger("pgq.redis")


class AsyncPusher:
    """Pushes ``(id, queue, priority)`` entries to Redis from an event loop (no thread).

    Raises:
        ConfigurationError: the ``redis`` package is missing or the URL is malformed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings, self.keys, self.url = settings, Keys(settings.redis_prefix, settings.schema), redact_url(settings.redis_url) or ""
        self._client: Any = open_redis(settings, asyncio=True)
        self._errors = redis_errors()
        self._offer = self._client.register_script(read_script("offer"))
        self.breaker = CircuitBreaker()
        self._registered: dict[str, float] = {}
        self.closed = False

    async def push_quietly(self, entries: Iterable[tuple[int, str, int]]) -> int:
        """Mirror runnable jobs; return how many were new (0 when Redis failed: logged, not raised)."""
        try:
            return await self.push(entries)
        except RedisUnavailable as exc:
            log.debug("push skipped: %s", exc)
            return 0

    async def push(self, entries: Iterable[tuple[int, str, int]]) -> int:
        """``RedisClient.push`` for asyncio. Raises ``RedisUnavailable``."""
        queues, offers = offer_calls(self.keys, entries, 0)
        if not offers:
            return 0
        guard(self)
        try:
            added = 0
            for keys, args in offers:
                added += int(await self._offer(keys=keys, args=args))
            await self._register(queues)
        except self._errors as exc:
            raise failure(self, "push", exc) from exc
        success(self)
        return added

    async def _register(self, queues: list[str]) -> None:
        """``RedisClient.register``: add the queues to the mirrored set (a new one is marked built)."""
        now = time.monotonic()
        due = registration_due(self._registered, queues, now)
        if not due:
            return
        steps = registration(self.keys, due)
        replies: Any = None
        with contextlib.suppress(StopIteration):
            while True:
                commands = steps.send(replies)
                async with self._client.pipeline(transaction=False) as pipe:
                    for name, args, kwargs in commands:
                        getattr(pipe, name)(*args, **kwargs)
                    replies = await pipe.execute()
        self._registered.update((q, now) for q in due)

    async def close(self) -> None:
        """Close the connections (the object is unusable afterwards)."""
        self.closed = True
        try:
            await self._client.aclose()
        except self._errors:
            pass
