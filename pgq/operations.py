"""Database operations written once, run by a sync or an async executor (a "sans-IO" split).

An operation is a generator: it yields requests (run a ``Statement``, ``CopyIn``
some rows, run a nested operation as one ``Transaction``, ask whether the
connection ``CAN_COPY``) and receives each answer (the rows; a driver error is
thrown into it), and its return value is the operation's result. It builds
the SQL, parses the rows and decides; it does no I/O. ``run`` answers the
requests on a psycopg ``Connection`` or a SQLAlchemy ``Connection``;
``run_async`` on a psycopg ``AsyncConnection`` or a SQLAlchemy
``AsyncConnection`` (with psycopg). So the producer's statements (``pgq.queries``)
exist once for both. Translating driver errors stays ``pgq.db``'s, and the
queue-level requests (pool, retries, Redis, waiting) are ``pgq.queue_io``'s.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import psycopg

from pgq.db import execute, execute_async

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")

#: Rows a statement returned, as tuples.
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Statement:
    """Run ``sql`` with bound ``params``; the answer is its rows (``[]`` for none)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class CopyIn:
    """``COPY ... FROM STDIN`` (``sql``) fed with ``blocks`` of text-format lines; the answer is None."""

    sql: str
    blocks: Sequence[str]


@dataclass(frozen=True, slots=True)
class Transaction:
    """Run ``op`` in one transaction: its own on an autocommit connection (pgq's
    pooled ones), else the caller's open one (which decides). The answer is its result."""

    op: Generator[Any, Any, Any]


class _CanCopy:
    """Ask whether the connection takes ``CopyIn`` (a psycopg one); the answer is a bool."""

    def __repr__(self) -> str:
        return "CAN_COPY"


CAN_COPY = _CanCopy()

#: What an operation may yield to a connection.
Request = Statement | CopyIn | Transaction | _CanCopy
#: An operation returning ``T``.
Op = Generator[Any, Any, T]


def drive(op: Op[T], answer: Callable[[Any], Any]) -> T:
    """Run ``op``, answering each request with ``answer(request)``; errors are thrown into ``op``."""
    send: Callable[[Any], Any] = op.send
    value: Any = None
    while True:
        try:
            request = send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            value, send = answer(request), op.send
        except Exception as exc:  # handed to the operation, which may handle it or let it leave
            value, send = exc, op.throw


async def drive_async(op: Op[T], answer: Callable[[Any], Any]) -> T:
    """``drive`` with an awaitable ``answer`` (the async executor's one loop)."""
    send: Callable[[Any], Any] = op.send
    value: Any = None
    while True:
        try:
            request = send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            value, send = await answer(request), op.send
        except Exception as exc:
            value, send = exc, op.throw


def answer(conn: Any, request: Any) -> Any:
    """Answer one connection request on a sync connection (psycopg or SQLAlchemy)."""
    if isinstance(request, Statement):
        return execute(conn, request.sql, request.params)
    if isinstance(request, Transaction):
        with _transaction(conn):
            return run(conn, request.op)
    if isinstance(request, CopyIn):
        with conn.cursor().copy(request.sql) as copy:
            for block in request.blocks:  # the server parses one block while the next is sent
                copy.write(block)
        return None
    if request is CAN_COPY:
        return isinstance(conn, psycopg.Connection)
    raise TypeError(f"not a connection request: {request!r}")


async def answer_async(conn: Any, request: Any) -> Any:
    """Answer one connection request on an async connection (psycopg or SQLAlchemy)."""
    if isinstance(request, Statement):
        return await execute_async(conn, request.sql, request.params)
    if isinstance(request, Transaction):
        async with _transaction_async(conn):
            return await run_async(conn, request.op)
    if isinstance(request, CopyIn):
        async with conn.cursor().copy(request.sql) as copy:
            for block in request.blocks:
                await copy.write(block)
        return None
    if request is CAN_COPY:
        return isinstance(conn, psycopg.AsyncConnection)
    raise TypeError(f"not a connection request: {request!r}")


def run(conn: Any, op: Op[T]) -> T:
    """Run ``op`` on a sync connection (errors are the driver's: ``pgq.db.translated`` maps them)."""
    return drive(op, lambda request: answer(conn, request))


async def run_async(conn: Any, op: Op[T]) -> T:
    """Run ``op`` on an async connection, without a thread."""
    return await drive_async(op, lambda request: answer_async(conn, request))


@contextlib.contextmanager
def _transaction(conn: Any) -> Iterator[None]:
    if isinstance(conn, psycopg.Connection) and conn.autocommit:
        with conn.transaction():
            yield
    else:
        yield  # the caller's transaction


@contextlib.asynccontextmanager
async def _transaction_async(conn: Any) -> AsyncIterator[None]:
    if isinstance(conn, psycopg.AsyncConnection) and conn.autocommit:
        async with conn.transaction():
            yield
    else:
        yield


class Bound(Generic[P, T]):
    """An operation bound to its ``Queries``: call it with a sync connection first,
    ``await .run_async(conn, ...)``, or take ``.op(...)`` to compose it in another one."""

    __slots__ = ("op",)

    def __init__(self, make: Callable[P, Op[T]]) -> None:
        self.op = make

    def __call__(self, conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(conn, self.op(*args, **kwargs))

    async def run_async(self, conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(conn, self.op(*args, **kwargs))


class operation(Generic[S, P, T]):  # noqa: N801 - used as a decorator, like property
    """Decorator for a generator method describing one operation (see the module docstring).

    ``queries.get_job(conn, 7)`` runs it on a sync connection as before;
    ``await queries.get_job.run_async(aconn, 7)`` on an async one;
    ``yield from queries.get_job.op(7)`` inside another operation.
    """

    def __init__(self, make: Callable[Concatenate[S, P], Op[T]]) -> None:
        self.make = make
        functools.update_wrapper(self, make)  # type: ignore[arg-type]

    def __get__(self, obj: S, owner: type[Any] | None = None) -> Bound[P, T]:
        return Bound(functools.partial(self.make, obj))


# ---------------------------------------------------------------- requests beyond one connection
# Answered by the queue's executors (``pgq.queue_io``), not by ``run``/``run_async``.


@dataclass(frozen=True, slots=True)
class Attempt:
    """Run ``op`` on a fresh pooled connection and report how it went (a ``Sent``),
    instead of raising a driver error: for the operations that decide what a broken
    connection means (``pgq.delivery``)."""

    op: Generator[Any, Any, Any]


@dataclass(frozen=True, slots=True)
class Sent:
    """The answer to an ``Attempt``: its ``value``, or the driver ``error`` and whether
    it means the connection was ``lost`` (the server may or may not have run it)."""

    value: Any = None
    error: BaseException | None = None
    lost: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """Pause for ``seconds`` (``time.sleep`` or ``asyncio.sleep``); the answer is None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Push:
    """Redis mode: mirror ``entries`` ``(id, queue, priority)``; a Redis failure only
    logs (the reconciler mirrors them later). The answer is how many were new (0 without Redis)."""

    entries: Sequence[tuple[int, str, int]]


@dataclass(frozen=True, slots=True)
class Watch:
    """Start watching ``job_id``'s status; the answer is a handle for ``NextChange``.
    Asked before the status is read, so that no change between the read and the
    wait is missed."""

    job_id: int
    poll_interval: float


@dataclass(frozen=True, slots=True)
class NextChange:
    """Wait up to ``seconds`` (None: no limit) for a reason to read the watched job
    again: async, the job's status changed (NOTIFY); sync, the next poll is due."""

    handle: Any
    seconds: float | None
