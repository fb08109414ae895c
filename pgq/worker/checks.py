"""What a ``Worker`` needs of its queue, and its constructor's arguments checked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pgq.errors import ValidationError
from pgq.job import validate_queue_name
from pgq.settings import Settings
from pgq.worker.processes import resolve
from pgq.worker.runner import Handler

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.queries import Queries
    from pgq.scheduling.cron import Schedule
    from pgq.redis.client import RedisClient
    from pgq.tracing import Tracer


class TaskInfo(Handler, Protocol):
    """What the worker needs of a registered task (``pgq.Task``)."""

    @property
    def queue(self) -> str: ...


class WorkerQueue(Protocol):
    """What the worker needs of a ``pgq.Queue`` (the worker does not import ``pgq.queue``:
    ``Queue.worker()`` builds workers)."""

    settings: Settings
    queries: Queries
    tracer: Tracer | None  # OpenTelemetry spans (pgq.tracing); None when off

    @property
    def tasks(self) -> Mapping[str, TaskInfo]: ...

    @property
    def pool(self) -> ConnectionPool: ...

    @property
    def redis(self) -> RedisClient | None: ...

    @property
    def periodic_schedules(self) -> Mapping[str, Schedule]: ...


def _is_queue(obj: object) -> bool:
    """Whether ``obj`` looks like a ``pgq.Queue`` (checked without opening its pool)."""
    return (isinstance(getattr(obj, "settings", None), Settings) and hasattr(obj, "tasks")
            and hasattr(obj, "queries") and hasattr(type(obj), "pool") and hasattr(type(obj), "redis"))


def checked(queue: WorkerQueue, queues: Sequence[str] | None, concurrency: int, batch_size: int | None,
            worker_id: uuid.UUID | None, max_stuck_handlers: int | None) -> tuple[list[str], int]:
    """``Worker``'s arguments checked: (queue names, batch size). Raises ``ValidationError``."""
    if not _is_queue(queue):
        raise ValidationError(f"queue must be a pgq.Queue, got {type(queue).__name__}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 10_000:
        raise ValidationError(f"concurrency must be a whole number from 1 to 10000, got {concurrency!r}")
    if queues is None:
        queues = sorted({t.queue for t in queue.tasks.values()}) or [queue.settings.default_queue]
    if isinstance(queues, (str, bytes)) or not isinstance(queues, Iterable) or not queues:
        raise ValidationError(f"queues must be a non-empty list of queue names, got {queues!r}")
    names = list(dict.fromkeys(validate_queue_name(q) for q in queues))
    batch = queue.settings.claim_batch_size if batch_size is None else batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValidationError(f"batch_size must be a whole number >= 1, got {batch!r}")
    if worker_id is not None and not isinstance(worker_id, uuid.UUID):
        raise ValidationError(f"worker_id must be a uuid.UUID, got {worker_id!r}")
    if max_stuck_handlers is not None and (isinstance(max_stuck_handlers, bool)
                                           or not isinstance(max_stuck_handlers, int) or max_stuck_handlers < 1):
        raise ValidationError(f"max_stuck_handlers must be a whole number >= 1, got {max_stuck_handlers!r}")
    for name, task in queue.tasks.items():
        if task.isolation == "process":
            _check_importable(name, task.fn)
    return names, batch


def _check_importable(name: str, fn: Callable[..., object]) -> None:
    """A process-isolated handler must be found again by its module and name (a child
    process imports it so). Raises ``ValidationError``."""
    ref = (fn.__module__, fn.__qualname__)
    try:
        found = resolve(ref)
    except Exception as exc:
        raise ValidationError(f"task {name!r} (isolation='process'): {ref[0]}.{ref[1]} cannot be imported by "
                              f"name ({exc!r}); define the handler at module level") from None
    if found is not fn:
        raise ValidationError(f"task {name!r} (isolation='process'): {ref[0]}.{ref[1]} names another object "
                              "than the registered handler (was the name bound to something else?); register "
                              "the module-level function itself")
