"""What was enqueued: the jobs table read back, filtered, and asserted on with a useful message.

``enqueued`` returns the jobs that match the given fields (task, payload,
queue, priority, status, delay, unique key, dependencies, ...), read from
Postgres, whatever their status now. ``assert_enqueued`` raises an
``AssertionError`` that lists the nearest candidates and the fields in which
each differs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from pgq.db import translated
from pgq.errors import ValidationError
from pgq.job import Job, JobStatus
from pgq.queries import KitQueries

if TYPE_CHECKING:
    from pgq.queue import Queue, Task

# Most jobs read (a test that enqueues more filters in SQL of its own).
MAX_JOBS = 10_000
# run_at - created_at compared with ``delay`` to the millisecond (both are the enqueue's now()).
DELAY_TOLERANCE_SECONDS = 0.001


@dataclass(frozen=True)
class EnqueuedJob(Job):
    """A job as ``q.get`` reads it (its status now), plus what was asked at enqueue. Times are the database's."""

    group_key: str | None = None
    delay: float = 0.0  # seconds from enqueue to run_at (a retry moves run_at: then from enqueue to the retry)
    depends_on: tuple[int, ...] = ()  # parent job ids, ascending

    def describe(self) -> str:
        parents = f" depends_on={list(self.depends_on)}" if self.depends_on else ""
        keys = "".join(f" {k}={getattr(self, k)!r}" for k in ("unique_key", "group_key") if getattr(self, k))
        return (f"job {self.id}: task={self.task!r} queue={self.queue!r} payload={json.dumps(self.payload, sort_keys=True)}"
                f" priority={self.priority} status={self.status.value} delay={self.delay:g}{keys}{parents}")


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _task_name(value: object) -> str:
    name = getattr(value, "name", None) if not isinstance(value, str) else value
    if not isinstance(name, str) or not name:
        raise ValidationError(f"task must be a task name or a pgq.Task, got {value!r}")
    return name


def _mapping(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a dict (a JSON object), got {type(value).__name__}")
    try:
        parsed: dict[str, Any] = json.loads(json.dumps(dict(value)))  # as the jobs table stores it
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} must be JSON-serialisable: {exc}") from None
    return parsed


def _whole(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValidationError(f"{name} must be a whole number {bounds}, got {value!r}")
    return value


def _seconds(value: object, name: str) -> float:
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValidationError(f"{name} must be a number of seconds >= 0 or a timedelta, got {value!r}")
    return float(value)


def _status(value: object) -> JobStatus:
    statuses = {s.value: s for s in JobStatus}
    if isinstance(value, str) and value in statuses:
        return statuses[value]
    raise ValidationError(f"status must be one of {', '.join(statuses)}, got {value!r}")


def _parents(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"depends_on must be a list of job ids, got {value!r}")
    ids = list(value)
    for job_id in ids:
        _whole(job_id, "depends_on", 1)
    return tuple(sorted(set(ids)))


# Each filter: how its argument is checked, and the test a job must pass.
_Check = Callable[[EnqueuedJob, Any], bool]
_FILTERS: dict[str, tuple[Callable[[object], Any], _Check]] = {
    "task": (_task_name, lambda job, v: job.task == v),
    "payload": (lambda v: _mapping(v, "payload"), lambda job, v: job.payload == v),
    "payload_includes": (lambda v: _mapping(v, "payload_includes"),
                         lambda job, v: all(k in job.payload and job.payload[k] == x for k, x in v.items())),
    "queue": (lambda v: _text(v, "queue"), lambda job, v: job.queue == v),
    "priority": (lambda v: _whole(v, "priority", 1, 5), lambda job, v: job.priority == v),
    "status": (_status, lambda job, v: job.status is v),
    "delay": (lambda v: _seconds(v, "delay"), lambda job, v: abs(job.delay - v) <= DELAY_TOLERANCE_SECONDS),
    "max_attempts": (lambda v: _whole(v, "max_attempts", 1), lambda job, v: job.max_attempts == v),
    "timeout": (lambda v: _seconds(v, "timeout"),
                lambda job, v: job.timeout is not None and abs(job.timeout.total_seconds() - v) <= DELAY_TOLERANCE_SECONDS),
    "unique_key": (lambda v: _text(v, "unique_key"), lambda job, v: job.unique_key == v),
    "group_key": (lambda v: _text(v, "group_key"), lambda job, v: job.group_key == v),
    "depends_on": (_parents, lambda job, v: job.depends_on == v),
}


def _checked_filters(queue: object, given: Mapping[str, Any]) -> dict[str, Any]:
    from pgq.queue import Queue

    if not isinstance(queue, Queue):
        raise ValidationError(f"the first argument must be a pgq.Queue, got {type(queue).__name__}")
    return {name: _FILTERS[name][0](value) for name, value in given.items() if value is not None}


def _read(queue: Queue) -> list[EnqueuedJob]:
    with translated(queue.settings.database_url), queue.pool.connection() as conn:
        rows = KitQueries(queue.settings.schema).jobs(conn, MAX_JOBS)
    return [EnqueuedJob(**{f.name: getattr(job, f.name) for f in fields(Job)}, group_key=group_key, delay=delay,
                        depends_on=tuple(parents)) for job, group_key, delay, parents in rows]


def _differences(job: EnqueuedJob, filters: Mapping[str, Any]) -> list[str]:
    return [name for name, value in filters.items() if not _FILTERS[name][1](job, value)]


def enqueued(
    queue: Queue, /, task: str | Task | None = None, payload: Mapping[str, Any] | None = None, *,
    payload_includes: Mapping[str, Any] | None = None, status: JobStatus | str | None = None,
    priority: int | None = None, delay: float | dt.timedelta | None = None, max_attempts: int | None = None,
    timeout: float | dt.timedelta | None = None, unique_key: str | None = None, group_key: str | None = None,
    depends_on: Iterable[int] | None = None, **job_queue: str,
) -> list[EnqueuedJob]:
    """The jobs of ``queue``'s database that match every field given (oldest first).

    Args:
        queue: the ``pgq.Queue`` (positional).
        task: a task name or ``pgq.Task``. payload: the whole payload, equal as JSON.
        payload_includes: these keys with these values (others may be there too).
        status: the status now (``pgq.JobStatus`` or its text). priority: 1 to 5.
        delay: seconds from the enqueue to ``run_at`` (to the millisecond).
        timeout: seconds. depends_on: the parent job ids (in any order; all of them).
        queue= (keyword): the queue name the job went to.
    Raises:
        ValidationError: a filter of the wrong type or out of range; nothing was read.
    """
    filters = _filters(queue, task, payload, payload_includes, status, priority, delay, max_attempts, timeout,
                       unique_key, group_key, depends_on, job_queue)
    return [job for job in _read(queue) if not _differences(job, filters)]


def _filters(queue: Queue, task: object, payload: object, payload_includes: object, status: object, priority: object,
             delay: object, max_attempts: object, timeout: object, unique_key: object, group_key: object,
             depends_on: object, job_queue: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(set(job_queue) - {"queue"})
    if unknown:
        raise ValidationError(f"unknown filter(s) {', '.join(map(repr, unknown))}; the filters are "
                              f"{', '.join(sorted(_FILTERS))}")
    given = {"task": task, "payload": payload, "payload_includes": payload_includes, "status": status,
             "priority": priority, "delay": delay, "max_attempts": max_attempts, "timeout": timeout,
             "unique_key": unique_key, "group_key": group_key, "depends_on": depends_on,
             "queue": job_queue.get("queue")}
    return _checked_filters(queue, given)


def assert_enqueued(
    queue: Queue, /, task: str | Task | None = None, payload: Mapping[str, Any] | None = None, *,
    count: int | None = None, payload_includes: Mapping[str, Any] | None = None,
    status: JobStatus | str | None = None, priority: int | None = None, delay: float | dt.timedelta | None = None,
    max_attempts: int | None = None, timeout: float | dt.timedelta | None = None, unique_key: str | None = None,
    group_key: str | None = None, depends_on: Iterable[int] | None = None, **job_queue: str,
) -> list[EnqueuedJob]:
    """Assert that jobs matching the fields were enqueued; return them.

    ``count``: exactly that many must match (0: none); None: at least one. The
    fields are ``enqueued``'s.

    Raises:
        AssertionError: the wrong number matched; the message lists the candidates
            (the jobs of the same task, else every job; at most 20) and the fields each differs in.
        ValidationError: a bad filter or count; nothing was read.
    """
    filters = _filters(queue, task, payload, payload_includes, status, priority, delay, max_attempts, timeout,
                       unique_key, group_key, depends_on, job_queue)
    if count is not None:
        _whole(count, "count", 0)
    jobs = _read(queue)
    matches = [job for job in jobs if not _differences(job, filters)]
    if (len(matches) == count) if count is not None else matches:
        return matches
    wanted = ", ".join(f"{name}={value!r}" for name, value in filters.items()) or "any job"
    expected = f"exactly {count}" if count is not None else "at least 1"
    lines = [f"expected {expected} job(s) with {wanted}; found {len(matches)}"]
    if matches:
        lines += ["matching:"] + [f"  {job.describe()}" for job in matches[:20]]
    else:
        same_task = [job for job in jobs if "task" in filters and job.task == filters["task"]]
        candidates = same_task or jobs
        what = f"jobs of task {filters['task']!r}" if same_task else "every job enqueued"
        if not candidates:
            lines.append("no job was enqueued at all")
        else:
            lines.append(f"candidates ({what}, oldest first):")
            lines += [f"  {job.describe()}  <- differs in {', '.join(_differences(job, filters))}"
                      for job in candidates[:20]]
    raise AssertionError("\n".join(lines))
