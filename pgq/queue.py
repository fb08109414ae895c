"""The application's API: define tasks, enqueue, inspect, cancel, requeue, wait.

``Queue`` is what ``pgq.connect()`` returns. It validates every argument (in
``job.py``) before anything is sent, holds the small connection pool, and
delegates every statement to ``pgq.queries``. This module has the producer
side (tasks, enqueue) and the plumbing; inspecting and controlling enqueued
jobs (get, wait, cancel, the dead letter queue, stats, drain) is its base
class ``QueueControl``'s (``queue_control.py``). Running jobs is ``pgq.worker``'s.
Each producer call is written once, as an operation (``pgq.operations``), and
run by a sync executor or, for its ``*_async`` counterpart, by an async one on
psycopg's async pool (``pgq.queue_io``): no thread is borrowed, and no rule
has a second copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from psycopg_pool import ConnectionPool

from pgq.db import translated
from pgq.pool import live_connection, make_pool
from pgq.delivery import deliver
from pgq.errors import DuplicateJob, UnknownTask, ValidationError
from pgq.job import DEFAULT_PRIORITY, JobSpec, Ref, validate_isolation, validate_task_name
from pgq.operations import Op, Push
from pgq.queries import Queries, ensure_current
from pgq.queue_control import QueueControl
from pgq.queue_io import AsyncExecutor, AsyncSide, SyncExecutor
from pgq.retry import Backoff
from pgq.scheduling.graph import has_parents, order_graph, reject_refs
from pgq.scheduling import cron
from pgq.settings import Settings
from pgq.tracing import Tracer, open_tracer

if TYPE_CHECKING:
    from pgq.memory.search import Similar
    from pgq.redis.client import RedisClient
    from pgq.worker import Worker

log = logging.getLogger("pgq.queue")

F = TypeVar("F", bound=Callable[..., Any])
OnDuplicate = Literal["return", "raise"]
Isolation = Literal["thread", "process"]
_UNSET: Any = object()


class Task:
    """A registered handler plus its defaults. Calling it runs the function inline."""

    def __init__(
        self,
        owner: Queue,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str,
        priority: int,
        max_attempts: int,
        timeout: float | None,
        retry: Backoff | None,
        isolation: str = "thread",
    ) -> None:
        self.owner = owner
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.retry = retry
        self.isolation = isolation
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pgq.Task {self.name} queue={self.queue}>"

    def defer(self, **payload: Any) -> int:
        """Enqueue a job running this task with ``payload`` as its keyword arguments."""
        return self.owner.enqueue(self.name, payload)

    def enqueue(self, payload: Mapping[str, Any] | None = None, **options: Any) -> int:
        """Enqueue with per-job options (queue, priority, delay, run_at, unique_key, …)."""
        return self.owner.enqueue(self.name, payload, **options)

    async def defer_async(self, **payload: Any) -> int:
        """``defer`` for asyncio (``Queue.enqueue_async``)."""
        return await self.owner.enqueue_async(self.name, payload)

    async def enqueue_async(self, payload: Mapping[str, Any] | None = None, **options: Any) -> int:
        """``enqueue`` for asyncio (``Queue.enqueue_async``)."""
        return await self.owner.enqueue_async(self.name, payload, **options)

    def spec(self, payload: Mapping[str, Any] | None = None, **options: Any) -> JobSpec:
        """A validated ``JobSpec`` for ``Queue.enqueue_many``."""
        return self.owner.job_spec(self.name, payload, **options)


class Queue(QueueControl):
    """A connection to one pgq schema: tasks, producers and inspection.

    Thread-safe. The pool opens lazily on first use and checks once that the
    schema is at this pgq's migration head (``SchemaNotReady`` otherwise).
    """

    def __init__(self, settings: Settings, *, strict_tasks: bool = True) -> None:
        if not isinstance(settings, Settings):
            raise ValidationError(f"settings must be a pgq.Settings, got {type(settings).__name__}")
        self.settings = settings
        self.queries = Queries(settings.schema)
        self.strict_tasks = strict_tasks
        self.tasks: dict[str, Task] = {}
        self._pool: ConnectionPool[Any] | None = None
        self._pool_lock = threading.Lock()
        self._redis: RedisClient | None = None
        # The *_async calls' pool, LISTEN connection and Redis client, on one event loop (pgq.queue_io).
        self._async_side: AsyncSide | None = None
        # @periodic schedules, stored by each worker at start (pgq.scheduling.cron).
        self.periodic_schedules: dict[str, cron.Schedule] = {}
        #: OpenTelemetry spans (``Settings.tracing``, pgq[tracing]); None when off.
        self.tracer: Tracer | None = open_tracer(settings)

    def __repr__(self) -> str:
        return f"<pgq.Queue {self.settings!r}>"

    # ------------------------------------------------------------ plumbing
    @property
    def pool(self) -> ConnectionPool[Any]:
        """The connection pool (opened on first use, schema checked)."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    url = self.settings.require_database_url()
                    pool = make_pool(url, max_size=self.settings.pool_size, name=f"pgq-{self.settings.schema}",
                                     statement_timeout_seconds=self.settings.statement_timeout_seconds,
                                     prepared_statements=self.settings.prepared_statements)
                    try:
                        with translated(url), pool.connection() as conn:
                            ensure_current(conn, self.settings.schema)
                    except BaseException:
                        pool.close()
                        raise
                    self._pool = pool
        return self._pool

    def _run(self, fn: Callable[..., Any], *args: Any, connection: Any = None) -> Any:
        """Run ``fn(conn, *args)`` on ``connection`` or a pooled one, translating errors."""
        with translated(self.settings.database_url):
            if connection is not None:
                return fn(connection, *args)
            with live_connection(self.pool) as conn:
                return fn(conn, *args)

    def _sync(self, connection: Any = None) -> SyncExecutor:
        """The executor of a sync call: on ``connection`` (the caller's transaction) or the pool."""
        return SyncExecutor(self, connection)

    def _async(self, connection: Any = None) -> AsyncExecutor:
        """The executor of an ``*_async`` call, on the running event loop's ``AsyncSide``."""
        loop = asyncio.get_running_loop()
        side = self._async_side
        if side is None or side.loop is not loop:
            with self._pool_lock:
                side = self._async_side
                if side is None or side.loop is not loop:
                    if side is not None and side.pool is not None:
                        log.warning("pgq.Queue used from a new event loop; the previous loop's pool was not "
                                    "closed (await queue.aclose() before its loop ends)")
                    side = self._async_side = AsyncSide(self, loop)
        return AsyncExecutor(side, connection)

    def _send(self, specs: Sequence[JobSpec], *, idempotent: bool, transactional: bool,
              with_parents: bool) -> Op[list[tuple[int, bool]]]:
        """Insert ``specs`` (in a ``pgq.enqueue`` span when tracing is on, see ``pgq.tracing``):
        in the caller's transaction as is, else with ``delivery.deliver``'s retries."""
        if self.tracer is None:
            return (yield from self._insert(specs, idempotent, transactional, with_parents, None))
        with self.tracer.enqueue(specs) as traced:
            rows = yield from self._insert(specs, idempotent, transactional, with_parents, traced.context_json)
            traced.enqueued(rows)
            return rows

    def _insert(self, specs: Sequence[JobSpec], idempotent: bool, transactional: bool, with_parents: bool,
                trace_context: str | None) -> Op[list[tuple[int, bool]]]:
        if transactional:
            return (yield from self.queries.enqueue_jobs.op(specs, None, with_parents, trace_context))
        return (yield from deliver(self.queries, specs, idempotent=idempotent, url=self.settings.database_url,
                                   with_parents=with_parents, trace_context=trace_context))

    def close(self) -> None:
        """Close the pool (and the Redis client). The queue may be used again (it reopens).

        The async side (``*_async`` calls) belongs to its event loop: close it with
        ``await queue.aclose()`` (or ``async with queue:``) before that loop ends.
        """
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self._redis is not None:
                self._redis.close()
                self._redis = None

    async def aclose(self) -> None:
        """Close the async side (its pool, LISTEN connection and Redis client) and the sync one."""
        side, self._async_side = self._async_side, None
        if side is not None:
            await side.close()
        self.close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def redis(self) -> RedisClient | None:
        """The Redis accelerator's client when ``redis_url`` is set, else None (created on first use)."""
        if self.settings.redis_url is None:
            return None
        if self._redis is None:
            with self._pool_lock:
                if self._redis is None:
                    from pgq.redis.client import RedisClient

                    self._redis = RedisClient(self.settings)
        return self._redis

    def _push(self, specs: Sequence[JobSpec], rows: Sequence[tuple[int, bool]]) -> Op[None]:
        """Redis mode: mirror the jobs just enqueued (and committed) that are due now.

        Delayed jobs are mirrored by the reconciler when they fall due. A Redis
        failure only logs: Postgres committed the jobs, so they are enqueued.
        """
        if self.settings.redis_url is None:
            return
        now = dt.datetime.now(dt.UTC)  # only picks which ids to suggest; claims use the database clock
        entries = [
            (job_id, spec.queue, spec.priority)
            for spec, (job_id, created) in zip(specs, rows, strict=True)
            if created and not spec.depends_on and not spec.delay_seconds and (spec.run_at is None or spec.run_at <= now)
        ]
        if entries:
            yield Push(entries)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ tasks
    @overload
    def task(self, fn: F) -> Task: ...
    @overload
    def task(
        self, fn: None = None, *, name: str | None = ..., queue: str | None = ..., priority: int = ...,
        max_attempts: int | None = ..., timeout: float | None = ..., retry: Backoff | None = ...,
        isolation: Isolation = ...,
    ) -> Callable[[F], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: Backoff | None = None,
        isolation: Isolation = "thread",
    ) -> Task | Callable[[F], Task]:
        """Register a handler (decorator). Its defaults apply to every job of the task.

        Args:
            name: task name stored on jobs; defaults to ``module.function``.
            queue: default queue (``Settings.default_queue`` when None).
            priority: 1 (lowest) to 5 (highest).
            max_attempts: attempts before the dead letter queue (``Settings.max_attempts``).
            timeout: seconds one attempt may run; None = no limit.
            retry: backoff between attempts (``pgq.Backoff``); None = the default backoff.
            isolation: where a sync handler runs: ``"thread"`` (a runner thread; at its
                timeout the job is failed, the handler asked to stop and its thread
                replaced) or ``"process"`` (a child process of the worker, killed at the
                timeout or on cancel: a hard limit). A process handler must be a
                module-level function of an importable module (not ``__main__``),
                not ``async def``; it gets the payload and returns its result as JSON
                values, as every handler does.
        Raises:
            ValidationError: a bad default, a name registered twice, or a handler that
                cannot run in a process.
        """

        def register(f: Callable[..., Any]) -> Task:
            if not callable(f):
                raise ValidationError(f"@task needs a function, got {f!r}")
            validate_isolation(f, isolation)
            task_name = f"{f.__module__}.{f.__qualname__}".replace("<locals>.", "") if name is None else name
            if task_name in self.tasks:
                raise ValidationError(f"task {task_name!r} is already registered")
            attempts = self.settings.max_attempts if max_attempts is None else max_attempts
            # Validate the defaults now, not at the first enqueue.
            task_queue = self.settings.default_queue if queue is None else queue
            JobSpec.build(task_name, {}, queue=task_queue, priority=priority,
                          max_attempts=attempts, timeout=timeout, backoff=retry)
            t = Task(self, f, name=task_name, queue=task_queue, priority=priority,
                     max_attempts=attempts, timeout=timeout, retry=retry, isolation=isolation)
            self.tasks[task_name] = t
            return t

        return register(fn) if fn is not None else register

    def job_spec(
        self,
        task: str | Task,
        payload: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | dt.timedelta | None = _UNSET,
        unique_key: str | None = None,
        retry: Backoff | None = _UNSET,
        depends_on: Sequence[int | Ref] | None = None,
        group_key: str | None = None,
    ) -> JobSpec:
        """Validate one job's arguments against its task's defaults (no I/O).

        ``depends_on``: parents (job ids, or ``pgq.ref(i)`` within ``enqueue_many``);
        without ``priority`` such a job takes the highest of its parents' priorities.
        ``group_key``: the job's group (a tenant, a customer) for its queue's
        per-group limits and fair share (``set_queue_policy``).
        """
        name = task.name if isinstance(task, Task) else validate_task_name(task)
        registered = self.tasks.get(name)
        if registered is None and self.strict_tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTask(
                f"unknown task {name!r} (registered: {known}); register it with @queue.task, "
                "or connect with strict_tasks=False to enqueue tasks defined elsewhere"
            )
        if type(payload) is not dict and isinstance(payload, Mapping):
            payload = dict(payload)  # a dict is only encoded, never kept: no copy
        return JobSpec.build(
            name,
            payload,
            queue=queue if queue is not None else (registered.queue if registered else self.settings.default_queue),
            priority=priority if priority is not None else (registered.priority if registered else DEFAULT_PRIORITY),
            delay=delay,
            run_at=run_at,
            max_attempts=max_attempts if max_attempts is not None else (
                registered.max_attempts if registered else self.settings.max_attempts),
            timeout=timeout if timeout is not _UNSET else (registered.timeout if registered else None),
            unique_key=unique_key,
            backoff=retry if retry is not _UNSET else (registered.retry if registered else None),
            max_payload_bytes=self.settings.max_payload_bytes,
            depends_on=depends_on,
            inherit_priority=priority is None,
            group_key=group_key,
        )

    # ------------------------------------------------------------ producers
    def enqueue(
        self,
        task: str | Task,
        payload: Mapping[str, Any] | None = None,
        *,
        on_duplicate: OnDuplicate = "return",
        connection: Any = None,
        **options: Any,
    ) -> int:
        """Enqueue one job; return its id.

        Args:
            task: task name or ``Task``.
            payload: keyword arguments for the handler (JSON-serialisable dict).
            queue, priority, delay (seconds), run_at (aware datetime), max_attempts,
            timeout (seconds), unique_key, retry (``Backoff``): override the task's defaults;
            depends_on (parent ids), group_key (the job's group for per-group rules).
            on_duplicate: when ``unique_key`` is held by a live job: ``"return"`` its id
                (idempotent enqueue, the default) or ``"raise"`` ``DuplicateJob``.
            connection: a SQLAlchemy or psycopg connection with an open transaction; the
                job then exists only if the caller commits it (transactional enqueue).
        Raises:
            ValidationError / UnknownTask: bad arguments; nothing was written.
            DuplicateJob: with ``on_duplicate="raise"``.
            EnqueueOutcomeUnknown: the connection broke after the job may have been
                committed (pgq retries by itself whenever that is safe; see the README).
            DatabaseError: the database failed; nothing was written.
        """
        return self._sync(connection).run(self._enqueue(task, payload, on_duplicate, connection is not None, options))

    async def enqueue_async(
        self,
        task: str | Task,
        payload: Mapping[str, Any] | None = None,
        *,
        on_duplicate: OnDuplicate = "return",
        connection: Any = None,
        **options: Any,
    ) -> int:
        """``enqueue`` for asyncio (the same rules; ``connection``: a SQLAlchemy ``AsyncConnection``
        or a psycopg ``AsyncConnection`` with an open transaction)."""
        return await self._async(connection).run(
            self._enqueue(task, payload, on_duplicate, connection is not None, options))

    def _enqueue(self, task: str | Task, payload: Mapping[str, Any] | None, on_duplicate: OnDuplicate,
                 transactional: bool, options: dict[str, Any]) -> Op[int]:
        if on_duplicate not in ("return", "raise"):
            raise ValidationError(f"on_duplicate must be 'return' or 'raise', got {on_duplicate!r}")
        _check_options(options)
        spec = self.job_spec(task, payload, **options)
        reject_refs(spec)
        rows = yield from self._send([spec], idempotent=spec.unique_key is not None and on_duplicate == "return",
                                     transactional=transactional, with_parents=bool(spec.depends_on))
        ((job_id, created),) = rows
        if not transactional:
            # Transactional enqueues are mirrored by the reconciler once the caller commits.
            yield from self._push([spec], rows)
        if not created and on_duplicate == "raise":
            raise DuplicateJob(spec.unique_key or "", job_id)
        return job_id

    def enqueue_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, connection: Any = None
    ) -> list[int]:
        """Enqueue many jobs in one round trip; return their ids in order.

        Each item is a ``JobSpec`` (``task.spec(...)`` / ``queue.job_spec(...)``) or a
        dict ``{"task": ..., "payload": ..., **options}``. All are validated before
        anything is sent; one bad item raises and nothing is written. A unique_key held
        by a live job yields that job's id. A broken connection is handled as for
        ``enqueue`` (without unique keys the database is asked whether the batch
        committed); ``EnqueueOutcomeUnknown`` when that cannot be known.
        """
        return self._sync(connection).run(self._enqueue_many(jobs, connection is not None))

    async def enqueue_many_async(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, connection: Any = None
    ) -> list[int]:
        """``enqueue_many`` for asyncio (COPY on psycopg's async connection; ``connection`` as
        for ``enqueue_async``)."""
        return await self._async(connection).run(self._enqueue_many(jobs, connection is not None))

    def _enqueue_many(self, jobs: Iterable[JobSpec | Mapping[str, Any]], transactional: bool) -> Op[list[int]]:
        specs = self._specs(jobs)
        if not specs:
            return []
        idempotent = all(s.unique_key is not None for s in specs)
        if has_parents(specs):
            # Parents are sent first (scheduling.graph); the ids come back in input order.
            ordered, position = order_graph(specs)
            rows = yield from self._send(ordered, idempotent=idempotent, transactional=transactional,
                                         with_parents=True)
            if not transactional:
                yield from self._push(ordered, rows)  # the roots; released children reach Redis through the reconciler
            return [rows[position[i]][0] for i in range(len(specs))]
        rows = yield from self._send(specs, idempotent=idempotent, transactional=transactional, with_parents=False)
        if not transactional:
            yield from self._push(specs, rows)
        return [job_id for job_id, _created in rows]

    def _specs(self, jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[JobSpec]:
        """Validate ``enqueue_many``'s items (``JobSpec`` or dict); the first bad one raises."""
        if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Iterable):
            raise ValidationError(f"jobs must be a list of JobSpecs or dicts, got {type(jobs).__name__}")
        specs: list[JobSpec] = []
        for index, item in enumerate(jobs):
            if isinstance(item, JobSpec):
                specs.append(item)
            elif isinstance(item, Mapping):
                options = dict(item)
                if "task" not in options:
                    raise ValidationError(f"job {index}: a dict job needs a 'task' key")
                task = options.pop("task")
                payload = options.pop("payload", None)
                try:
                    _check_options(options)
                    specs.append(self.job_spec(task, payload, **options))
                except TypeError as exc:
                    raise ValidationError(f"job {index}: {exc}") from None
                except ValidationError as exc:
                    raise type(exc)(f"job {index}: {exc}") from None
            else:
                raise ValidationError(f"job {index}: expected a JobSpec or a dict, got {type(item).__name__}")
        return specs

    # ------------------------------------------------------------ inspection and control
    # get, cancel, dead_letters, requeue_dead, purge_dead, stats, wait, drain_worker:
    # inherited from QueueControl (queue_control.py).

    def similar(self, job_id: int, k: int = 5) -> list[Similar]:
        """Past executions most like ``job_id``'s failure, and how they ended (``pgq.memory.search.Memory.similar``)."""
        from pgq.memory.search import Memory

        with Memory(self) as memory:
            return memory.similar(job_id, k)


    # ------------------------------------------------------------ workers
    def worker(self, queues: Sequence[str] | None = None, concurrency: int = 10, **options: Any) -> Worker:
        """A worker that runs this queue's tasks (see ``pgq.Worker``)."""
        from pgq.worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, **options)

    def periodic(self, cron_expression: str, *, timezone: str = "UTC", name: str | None = None,
                 payload: Mapping[str, Any] | None = None, catch_up: cron.CatchUp = "once", catch_up_limit: int = 100,
                 misfire_grace_seconds: float = 60.0, **task_options: Any) -> Callable[[F], Task]:
        """Register a task that the maintenance leader enqueues at every tick (see ``pgq.scheduling.cron``)."""
        return cron.periodic(self, cron_expression, timezone=timezone, name=name, payload=payload, catch_up=catch_up,
                             catch_up_limit=catch_up_limit, misfire_grace_seconds=misfire_grace_seconds,
                             **task_options)

    def schedule(self, cron_expression: str, task: str, payload: Mapping[str, Any] | None = None, *,
                 name: str | None = None, timezone: str = "UTC", queue: str | None = None,
                 priority: int = DEFAULT_PRIORITY, max_attempts: int | None = None, catch_up: cron.CatchUp = "once",
                 catch_up_limit: int = 100, misfire_grace_seconds: float = 60.0) -> str:
        """Store a periodic schedule now (idempotent): 'created', 'updated' or 'unchanged'; see ``cron.Schedule``."""
        return str(self._run(cron.register, self.settings.schema, cron.Schedule.build(
            cron_expression, task, payload, name=name, timezone=timezone,
            queue=self.settings.default_queue if queue is None else queue, priority=priority,
            max_attempts=self.settings.max_attempts if max_attempts is None else max_attempts, catch_up=catch_up,
            catch_up_limit=catch_up_limit, misfire_grace_seconds=misfire_grace_seconds)))

    def schedules(self) -> list[cron.ScheduleInfo]:
        """Every stored schedule, with its next and last tick (``pgq schedules``)."""
        return list(self._run(cron.list_schedules, self.settings.schema))


# Per-job options of enqueue / enqueue_many (the keyword arguments of Queue.job_spec).
_JOB_OPTIONS = frozenset({"queue", "priority", "delay", "run_at", "max_attempts", "timeout", "unique_key", "retry",
                          "depends_on", "group_key"})


def _check_options(options: Mapping[str, Any]) -> None:
    if options.keys() <= _JOB_OPTIONS:
        return
    unknown = sorted(set(options) - _JOB_OPTIONS)
    if unknown:
        raise ValidationError(
            f"unknown job option(s) {', '.join(map(repr, unknown))}; the options are {', '.join(sorted(_JOB_OPTIONS))}"
        )


def connect(
    database_url: str | None = None,
    *,
    redis_url: str | None = _UNSET,
    schema: str | None = None,
    strict_tasks: bool = True,
    settings: Settings | None = None,
    **overrides: Any,
) -> Queue:
    """Create a ``Queue``. Arguments win over ``PGQ_*`` environment variables.

    No connection is opened until the first operation.

    Args:
        database_url: PostgreSQL URL or key=value DSN; None: ``PGQ_DATABASE_URL``.
        redis_url: the Redis accelerator; not given: ``PGQ_REDIS_URL``; an explicit
            ``None`` switches it off whatever the environment says (so do
            ``qdrant_url=None`` and ``listen_database_url=None``).
        schema: the pgq schema; None: ``PGQ_SCHEMA`` (default ``pgq``).
        strict_tasks: refuse to enqueue tasks this process did not register.
        settings: a complete ``pgq.Settings`` instead of the arguments above.
        overrides: any other ``Settings`` field, e.g. ``pool_size=8``.
    Raises:
        ConfigurationError: an invalid or unknown setting (the message names it).
    """
    given = {"redis_url": redis_url, **overrides}
    given = {name: value for name, value in given.items() if value is not _UNSET}
    if settings is not None:
        if database_url or schema or given:
            raise ValidationError("pass either settings= or individual settings, not both")
        return Queue(settings, strict_tasks=strict_tasks)
    # An explicit None wins over the environment for the optional backends.
    switched_off = {name: None for name in _OPTIONAL_URLS if name in given and given[name] is None}
    settings = Settings.from_env(database_url=database_url, schema=schema, **given)
    if switched_off:
        settings = settings.replace(**switched_off)
    return Queue(settings, strict_tasks=strict_tasks)


# Settings an explicit None switches off in connect() (None elsewhere means "not given").
_OPTIONAL_URLS = ("redis_url", "qdrant_url", "listen_database_url")
