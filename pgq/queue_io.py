"""How a ``Queue`` runs its operations: on the caller's connection or its pool, sync or async.

A ``Queue`` method builds one operation (``pgq.operations``: validation,
statements, result parsing and decisions, written once) and hands it to an
executor. ``SyncExecutor`` answers its requests with the sync pool, ``time``
and the Redis client; ``AsyncExecutor`` with the ``AsyncSide`` of the running
event loop: an ``AsyncConnectionPool``, ``asyncio.sleep``, ``redis.asyncio``
and one LISTEN connection whose notifications wake ``wait_async`` (the
``<schema>_job_status`` channel, revision 0017). No executor borrows a thread.
Driver errors leave as pgq errors (``pgq.db.translated``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgq.db import connect_async, connection_lost, translate, translated
from pgq.errors import PgqError
from pgq.job import JobStatus
from pgq.pool import live_connection, live_connection_async, make_async_pool
from pgq.operations import (
    Attempt,
    NextChange,
    Op,
    Push,
    Sent,
    Sleep,
    Watch,
    answer,
    answer_async,
    drive,
    drive_async,
    run,
    run_async,
)
from pgq.queries import check_revision

if TYPE_CHECKING:
    from pgq.queries import Queries
    from pgq.redis.client import RedisClient
    from pgq.redis.pusher import AsyncPusher
    from pgq.settings import Settings

log = logging.getLogger("pgq.queue")

T = TypeVar("T")

#: The statuses a waiter stops at.
FINAL = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED})


class Queue(Protocol):
    """What the executors use of a ``pgq.Queue``."""

    settings: Settings
    queries: Queries
    _async_side: AsyncSide | None

    @property
    def pool(self) -> ConnectionPool[Any]: ...

    @property
    def redis(self) -> RedisClient | None: ...


class Poll:
    """A waiter's polling pace: 5 ms, doubling up to ``poll_interval`` seconds."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.delay = min(0.005, poll_interval)

    def pause(self, seconds: float | None) -> float:
        """How long to sleep now (never past ``seconds``); the next pause is longer."""
        pause = self.delay if seconds is None else min(self.delay, max(0.0, seconds))
        self.delay = min(self.delay * 2, self.poll_interval)
        return pause


class SyncExecutor:
    """Runs operations for a ``Queue`` in the calling thread."""

    def __init__(self, queue: Queue, connection: Any = None) -> None:
        self.queue = queue
        self.connection = connection

    def run(self, op: Op[T]) -> T:
        with translated(self.queue.settings.database_url):
            return drive(op, self._answer)

    def _answer(self, request: Any) -> Any:
        if isinstance(request, Attempt):
            conn = None
            try:
                with live_connection(self.queue.pool) as conn:
                    return Sent(run(conn, request.op))
            except PoolTimeout as exc:
                return Sent(error=exc)
            except psycopg.Error as exc:
                return Sent(error=exc, lost=connection_lost(exc, conn))
        if isinstance(request, Push):
            client = self.queue.redis
            return 0 if client is None else client.push_quietly(request.entries)
        if isinstance(request, Watch):
            return Poll(request.poll_interval)
        if isinstance(request, NextChange):
            time.sleep(request.handle.pause(request.seconds))  # the sync wait polls
            return None
        if isinstance(request, Sleep):
            time.sleep(request.seconds)
            return None
        if self.connection is not None:
            return answer(self.connection, request)
        with live_connection(self.queue.pool) as conn:
            return answer(conn, request)


class AsyncExecutor:
    """Runs operations for a ``Queue`` on the running event loop."""

    def __init__(self, side: AsyncSide, connection: Any = None) -> None:
        self.side = side
        self.connection = connection
        self._watching: list[Waiter] = []

    async def run(self, op: Op[T]) -> T:
        try:
            with translated(self.side.queue.settings.database_url):
                return await drive_async(op, self._answer)
        finally:
            for waiter in self._watching:
                self.side.forget(waiter)

    async def _answer(self, request: Any) -> Any:
        if isinstance(request, Attempt):
            conn = None
            try:
                async with live_connection_async(await self.side.open()) as conn:
                    return Sent(await run_async(conn, request.op))
            except PoolTimeout as exc:
                return Sent(error=exc)
            except psycopg.Error as exc:
                return Sent(error=exc, lost=connection_lost(exc, conn))
        if isinstance(request, Push):
            pusher = await self.side.pusher()
            return 0 if pusher is None else await pusher.push_quietly(request.entries)
        if isinstance(request, Watch):
            if not self.side.queue.settings.listen:
                return Poll(request.poll_interval)  # poll-only mode (e.g. behind PgBouncer)
            waiter = await self.side.watch(request.job_id)
            self._watching.append(waiter)
            return waiter
        if isinstance(request, NextChange):
            handle = request.handle
            if isinstance(handle, Poll):
                await asyncio.sleep(handle.pause(request.seconds))
            else:
                await handle.changed(request.seconds)
            return None
        if isinstance(request, Sleep):
            await asyncio.sleep(request.seconds)
            return None
        if self.connection is not None:
            return await answer_async(self.connection, request)
        async with live_connection_async(await self.side.open()) as conn:
            return await answer_async(conn, request)


class Waiter:
    """One ``wait_async`` call's watch on a job: set when the job may have finished."""

    __slots__ = ("event", "job_id")

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.event = asyncio.Event()

    async def changed(self, seconds: float | None) -> None:
        """Return when the job may have finished, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()


class AsyncSide:
    """What a ``Queue`` needs on one event loop: its pool, its Redis pusher, its listener.

    Opened on first use, on the loop that first uses it (a psycopg async pool
    belongs to one loop). The listener is one LISTEN connection on
    ``<schema>_job_status``: each notification (one per statement that changed
    some job's status) makes it read the status of every job waited for, in one
    statement, and wake the waiters whose job finished. Nothing is read while no
    notification comes: waiting is not polling.
    """

    def __init__(self, queue: Queue, loop: asyncio.AbstractEventLoop) -> None:
        self.queue = queue
        self.loop = loop
        self.pool: AsyncConnectionPool[Any] | None = None
        self._pusher: AsyncPusher | None = None
        self._lock = asyncio.Lock()
        self._waiters: dict[int, set[Waiter]] = {}
        self._listening: asyncio.Future[None] | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._keeper: AsyncGenerator[None, None] | None = None
        #: LISTEN connections opened (1, plus one per reconnection), for tests and diagnostics.
        self.listens = 0

    async def open(self) -> AsyncConnectionPool[Any]:
        """The pool (opened on first use, schema checked)."""
        if self.pool is None:
            async with self._lock:
                if self.pool is None:
                    settings = self.queue.settings
                    url = settings.require_database_url()
                    pool = await make_async_pool(
                        url, max_size=settings.pool_size, min_size=settings.pool_size, name=f"pgq-async-{settings.schema}",
                        statement_timeout_seconds=settings.statement_timeout_seconds,
                        prepared_statements=settings.prepared_statements)
                    try:
                        with translated(url):
                            async with live_connection_async(pool) as conn:
                                await run_async(conn, check_revision(settings.schema))
                    except BaseException:
                        await pool.close()
                        raise
                    self.pool = pool
                    # Closed with its loop: asyncio.run() finalises the loop's async
                    # generators before it closes the loop, and this one's ``finally``
                    # closes the side (so a queue used by several asyncio.run() calls
                    # leaks no connection). ``aclose()`` closes it earlier.
                    self._keeper = _close_with_loop(self)
                    await anext(self._keeper)
        return self.pool

    async def pusher(self) -> AsyncPusher | None:
        """Redis mode: the ``redis.asyncio`` pusher (created on first use); None without Redis."""
        if self.queue.settings.redis_url is None:
            return None
        if self._pusher is None:
            from pgq.redis.pusher import AsyncPusher

            self._pusher = AsyncPusher(self.queue.settings)
        return self._pusher

    # ------------------------------------------------------------ waiting on LISTEN
    async def watch(self, job_id: int) -> Waiter:
        """A waiter for ``job_id``, once the listener LISTENs (so no later change is missed)."""
        if self._listening is None:
            self._listening = self.loop.create_future()
            self._tasks = [self.loop.create_task(self._listen(), name="pgq-async-listen")]
        await asyncio.shield(self._listening)
        waiter = Waiter(job_id)
        self._waiters.setdefault(job_id, set()).add(waiter)
        return waiter

    def forget(self, waiter: Waiter) -> None:
        waiters = self._waiters.get(waiter.job_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[waiter.job_id]

    async def _listen(self) -> None:
        """LISTEN, and mark every notification; reconnect (waking every waiter) when the connection drops."""
        settings = self.queue.settings
        url = settings.listen_database_url or settings.require_database_url()
        channel = sql.SQL("LISTEN {}").format(sql.Identifier(f"{settings.schema}_job_status"))
        backoff = 0.05
        while True:
            try:
                async with await connect_async(url) as conn:
                    await conn.execute(channel)
                    self.listens += 1
                    if self._listening is not None and not self._listening.done():
                        self._listening.set_result(None)
                        self._tasks.append(self.loop.create_task(self._check(), name="pgq-async-check"))
                    if self.listens > 1:
                        self._dirty.set()  # changes may have come while not listening: read again
                    backoff = 0.05
                    async for _note in conn.notifies():
                        self._dirty.set()
            except (psycopg.Error, PgqError) as exc:
                if self._listening is not None and not self._listening.done():
                    self._listening.set_exception(exc if isinstance(exc, PgqError) else translate(exc, url))
                    self._listening = None
                    return
                log.warning("the LISTEN connection of wait_async was lost (%s); reconnecting in %.2f s", exc, backoff)
                self._wake_all()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _check(self) -> None:
        """After notifications: read the waited jobs' statuses (one statement), wake the finished ones."""
        queries = self.queue.queries
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            ids = list(self._waiters)
            if not ids:
                continue
            try:
                async with live_connection_async(await self.open()) as conn:
                    outcomes = await queries.job_outcomes.run_async(conn, ids)
            except (psycopg.Error, PoolTimeout, PgqError) as exc:
                log.info("wait_async could not read the jobs' statuses (%s); each waiter reads its own", exc)
                self._wake_all()
                continue
            for job_id in ids:
                outcome = outcomes.get(job_id)
                if outcome is None or outcome[0] in FINAL:
                    for waiter in self._waiters.get(job_id, ()):
                        waiter.event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()

    async def close(self, *, loop_ending: bool = False) -> None:
        """Stop the listener, close the Redis pusher and the pool.

        ``loop_ending``: called as ``asyncio.run()`` ends, after it cancelled every
        task, the pool's own workers included (closing the pool then reports their
        cancellation, which is expected there).
        """
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._listening = None
        if self._pusher is not None:
            pusher, self._pusher = self._pusher, None
            await pusher.close()
        if self.pool is not None:
            pool, self.pool = self.pool, None
            if loop_ending:
                # The pool stops at its cancelled workers before closing its idle
                # connections (psycopg_pool 3.2-3.3): those are closed here.
                idle = list(getattr(pool, "_pool", ()))
                with contextlib.suppress(asyncio.CancelledError):
                    await pool.close()
                for conn in idle:
                    await conn.close()
            else:
                await pool.close()



async def _close_with_loop(side: AsyncSide) -> AsyncGenerator[None, None]:
    """Suspended until its event loop shuts its async generators down; then closes ``side``."""
    try:
        yield
    finally:
        if side.queue._async_side is side:
            side.queue._async_side = None
        await side.close(loop_ending=True)
