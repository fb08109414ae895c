"""Jobs as Python values: ``JobStatus``, the allowed transitions, ``JobSpec``
(what you enqueue, validated) and ``Job`` (a row read back).

Validation of enqueue arguments lives here, once, for every entry point
(``Queue.enqueue``, ``enqueue_many``, ``Task.defer``, the CLI), and of a task's
``isolation``. No SQL here.
"""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pgq.errors import MAX_DELAY_SECONDS, InvalidGraph, ValidationError
from pgq.retry import Backoff
from pgq.settings import QUEUE_NAME



TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 1, 5, 3


class JobStatus(enum.StrEnum):
    """Status of a job; the values are the SQL enum ``job_status``."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED})
LIVE_STATUSES = frozenset({JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING})

# The state machine of SPEC §2 as data: (from, verb) -> to.
TRANSITIONS: dict[tuple[JobStatus, str], JobStatus] = {
    (JobStatus.WAITING, "release"): JobStatus.QUEUED,
    (JobStatus.WAITING, "cancel"): JobStatus.CANCELLED,
    (JobStatus.QUEUED, "claim"): JobStatus.RUNNING,
    (JobStatus.QUEUED, "cancel"): JobStatus.CANCELLED,
    (JobStatus.RETRYING, "claim"): JobStatus.RUNNING,
    (JobStatus.RETRYING, "cancel"): JobStatus.CANCELLED,
    (JobStatus.RUNNING, "complete"): JobStatus.COMPLETED,
    (JobStatus.RUNNING, "retry"): JobStatus.RETRYING,
    (JobStatus.RUNNING, "fail"): JobStatus.DEAD,
    (JobStatus.RUNNING, "rescue"): JobStatus.RETRYING,
    (JobStatus.RUNNING, "rescue_dead"): JobStatus.DEAD,
    (JobStatus.RUNNING, "release"): JobStatus.QUEUED,
    (JobStatus.RUNNING, "cancel"): JobStatus.CANCELLED,
    (JobStatus.DEAD, "requeue"): JobStatus.QUEUED,
}


def next_status(status: JobStatus, verb: str) -> JobStatus:
    """Return the status after ``verb``; raise ``ValidationError`` if the move is not allowed."""
    try:
        return TRANSITIONS[(status, verb)]
    except KeyError:
        raise ValidationError(f"a {status.value} job cannot {verb}") from None


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def validate_queue_name(queue: object) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValidationError(
            f"queue name must be 1-100 characters of letters, digits and _ . : - "
            f"(starting with a letter or digit), got {queue!r}"
        )
    return queue


def validate_task_name(task: object) -> str:
    if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
        raise ValidationError(
            f"task name must be 1-200 characters of letters, digits and _ . : - "
            f"(starting with a letter or _), got {task!r}"
        )
    return task


# \u0000 preceded by an even number of backslashes (so the escape is not itself escaped).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


# One encoder for every call: ``json.dumps`` with options builds a new one each time
# (a third of the cost of encoding a small payload).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_json(value: Any, what: str, max_bytes: int | None = None) -> str:
    """Serialise ``value`` to JSON text Postgres accepts, or raise ``ValidationError``."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to serialise as JSON") from None
    # json.dumps writes a NUL as \u0000; a string holding a backslash and "u0000"
    # comes out as \\u0000 (escaped backslash), which Postgres stores fine.
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValidationError(f"{what} contains a NUL character, which Postgres jsonb cannot store")
    if text.isascii():
        size = len(text)  # one byte per character, and no lone surrogate
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValidationError(f"{what} contains text that is not valid UTF-8: {exc.reason}") from None
    if max_bytes is not None and size > max_bytes:
        raise ValidationError(f"{what} is {size} bytes as JSON, over the limit of {max_bytes} (PGQ_MAX_PAYLOAD_BYTES)")
    return text


def validate_isolation(fn: Callable[..., Any], isolation: object) -> None:
    """Raise ``ValidationError`` unless task handler ``fn`` can run with ``isolation``
    (``"thread"``, or ``"process"``: a child process imports it by module and name)."""
    if isolation not in ("thread", "process"):
        raise ValidationError(f"isolation must be 'thread' or 'process', got {isolation!r}")
    if isolation == "thread":
        return
    what = getattr(fn, "__qualname__", repr(fn))
    if not inspect.isfunction(fn):
        raise ValidationError(f"isolation='process' needs a plain function defined at module level, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise ValidationError(f"isolation='process' is for sync handlers; {what} is async def (an async "
                              "handler is cancelled at its timeout already)")
    if "<" in fn.__qualname__:
        raise ValidationError(f"isolation='process' needs a function defined at module level (a child process "
                              f"imports it by name), got {fn.__qualname__!r} (a lambda or a nested function)")
    if fn.__module__ in ("__main__", "__mp_main__"):
        raise ValidationError(f"isolation='process': {what} is defined in the script being run (__main__), which "
                              "a child process cannot import by name; move it to a module")


# The most parents one job may have (enqueue_jobs_v2 enforces the same bound).
MAX_PARENTS = 1000


@dataclass(frozen=True)
class Ref:
    """A reference to another job of the same ``enqueue_many`` call, by its position (0-based).

    Made with ``pgq.ref(index)``; see ``Queue.enqueue_many``.
    """

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise InvalidGraph(f"pgq.ref() takes a job's position in the call (0 or more), got {self.index!r}")


def ref(index: int) -> Ref:
    """Refer to the job at ``index`` of the same ``enqueue_many`` call, as a parent in ``depends_on``."""
    return Ref(index)


def validate_depends_on(depends_on: Any) -> tuple[int | Ref, ...]:
    """Check a ``depends_on`` list: job ids (positive ints) and ``pgq.ref()``s, at most ``MAX_PARENTS``.

    Duplicates are dropped (an edge is a set member). Raises ``InvalidGraph``.
    """
    if depends_on is None:
        return ()
    if isinstance(depends_on, (str, bytes, dict)) or not isinstance(depends_on, (list, tuple, set, frozenset)):
        raise InvalidGraph(f"depends_on must be a list of job ids or pgq.ref()s, got {type(depends_on).__name__}")
    parents: dict[int | Ref, None] = {}
    for parent in depends_on:
        if isinstance(parent, Ref):
            parents[parent] = None
        elif isinstance(parent, bool) or not isinstance(parent, int) or not 1 <= parent <= 2**63 - 1:
            raise InvalidGraph(f"depends_on holds job ids (whole numbers from 1) or pgq.ref()s, got {parent!r}")
        else:
            parents[parent] = None
    if len(parents) > MAX_PARENTS:
        raise InvalidGraph(f"a job may have at most {MAX_PARENTS} parents, got {len(parents)}")
    return tuple(parents)


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue, validated. Build it with ``JobSpec.build``."""

    task: str
    payload_json: str
    queue: str
    priority: int
    delay_seconds: float | None
    run_at: dt.datetime | None
    max_attempts: int
    timeout_seconds: float | None
    unique_key: str | None
    backoff: Backoff | None
    #: Parents: job ids, or ``Ref``s to jobs of the same ``enqueue_many`` call.
    depends_on: tuple[int | Ref, ...] = ()
    #: No priority was given: the job takes the highest of its parents' (``priority`` is then unused).
    inherit_priority: bool = False
    #: The job's group (a tenant, a customer) for its queue's per-group limits and fair share.
    group_key: str | None = None

    @classmethod
    def build(
        cls,
        task: str,
        payload: Any = None,
        *,
        queue: str,
        priority: int = DEFAULT_PRIORITY,
        delay: float | dt.timedelta | None = None,
        run_at: dt.datetime | None = None,
        max_attempts: int = 3,
        timeout: float | dt.timedelta | None = None,
        unique_key: str | None = None,
        backoff: Backoff | None = None,
        max_payload_bytes: int | None = None,
        depends_on: Any = None,
        inherit_priority: bool = False,
        group_key: str | None = None,
    ) -> JobSpec:
        """Validate every argument; raise ``ValidationError`` naming the first bad one."""
        validate_task_name(task)
        validate_queue_name(queue)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationError(f"payload must be a dict of keyword arguments, got {type(payload).__name__}")
        for key in payload:
            if not isinstance(key, str):
                raise ValidationError(f"payload keys must be strings, got {key!r}")
        payload_json = encode_json(payload, "payload", max_payload_bytes)
        if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValidationError(f"priority must be a whole number from 1 (lowest) to 5 (highest), got {priority!r}")
        if delay is not None and run_at is not None:
            raise ValidationError("give delay or run_at, not both")
        delay_seconds: float | None = None
        if delay is not None:
            delay_seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
            if not _is_number(delay_seconds) or not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
                raise ValidationError(f"delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f}, got {delay!r}")
            delay_seconds = float(delay_seconds)
        if run_at is not None:
            if not isinstance(run_at, dt.datetime) or run_at.tzinfo is None or run_at.utcoffset() is None:
                raise ValidationError(f"run_at must be a timezone-aware datetime, got {run_at!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
            raise ValidationError(f"max_attempts must be a whole number from 1 to 1000, got {max_attempts!r}")
        timeout_seconds: float | None = None
        if timeout is not None:
            timeout_seconds = timeout.total_seconds() if isinstance(timeout, dt.timedelta) else timeout
            # The database keeps microseconds: anything shorter would be stored as 0.
            if not _is_number(timeout_seconds) or not 1e-6 <= timeout_seconds <= MAX_DELAY_SECONDS:
                raise ValidationError(
                    f"timeout must be a number of seconds from 0.000001 to {MAX_DELAY_SECONDS:.0f}, got {timeout!r}")
            timeout_seconds = float(timeout_seconds)
        _check_key("unique_key", unique_key)
        _check_key("group_key", group_key)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ValidationError(f"retry must be a pgq.Backoff, got {type(backoff).__name__}")
        parents = validate_depends_on(depends_on)
        return cls(task, payload_json, queue, priority, delay_seconds, run_at, max_attempts,
                   timeout_seconds, unique_key, backoff, parents, inherit_priority and bool(parents), group_key)


def _check_key(name: str, key: str | None) -> None:
    """A unique or group key: None, or 1-200 characters of UTF-8 text without NUL."""
    if key is None:
        return
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise ValidationError(f"{name} must be a string of 1-200 characters, got {key!r}")
    if "\x00" in key:
        raise ValidationError(f"{name} contains a NUL character")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{name} is not valid UTF-8 text") from None


@dataclass(frozen=True)
class Job:
    """A job row as read from the database (all times are the database's)."""

    id: int
    queue: str
    task: str
    payload: dict[str, Any]
    priority: int
    status: JobStatus
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    timeout: dt.timedelta | None
    unique_key: str | None
    worker_id: UUID | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: Any
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    #: The producer's W3C trace context (``traceparent``, ``tracestate``) when it
    #: traced the enqueue (``pgq.tracing``, revision 0014); None otherwise.
    trace_context: dict[str, str] | None = None

    @property
    def timeout_seconds(self) -> float | None:
        return None if self.timeout is None else self.timeout.total_seconds()


# Column order of every SELECT that builds a Job (see pgq/queries/base.py).
JOB_COLUMNS = tuple(Job.__dataclass_fields__)


_STATUS_INDEX = JOB_COLUMNS.index("status")
_PAYLOAD_INDEX = JOB_COLUMNS.index("payload")
_STATUSES = {s.value: s for s in JobStatus}


def job_from_row(row: tuple[Any, ...]) -> Job:
    """Build a ``Job`` from a row selected in ``JOB_COLUMNS`` order (on the claim hot path).

    The payload may come as JSON text (``payload::text``); it is parsed here.
    """
    values = list(row)
    values[_STATUS_INDEX] = _STATUSES[values[_STATUS_INDEX]]
    payload = values[_PAYLOAD_INDEX]
    if isinstance(payload, str):
        values[_PAYLOAD_INDEX] = {} if payload == "{}" else json.loads(payload)
    return Job(*values)
