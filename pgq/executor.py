"""Running one job's handler and turning what happened into an ``Outcome``.

A sync handler runs in the calling thread (the worker's thread pool), an
``async def`` handler as a coroutine on the worker's event loop. Exceptions,
``Retry``/``Fatal`` signals, timeouts and results that are not JSON become
``Failed`` or ``Completed`` values; the database is someone else's job.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgq.errors import Fatal, Retry, ValidationError
from pgq.job import Job, encode_json


@dataclass(frozen=True)
class Completed:
    """The handler returned; ``result_json`` is its return value as JSON (None for None)."""

    result_json: str | None


@dataclass(frozen=True)
class Failed:
    """The attempt failed. ``retry_delay`` overrides the backoff; ``fatal`` skips retries."""

    error_type: str
    message: str
    traceback: str | None = None
    retry_delay: float | None = None
    fatal: bool = False
    outcome: str = "failed"  # or "timed_out"


Outcome = Completed | Failed


log = logging.getLogger("pgq.worker")

#: After an async handler's timeout, how long its cancellation may take before its job
#: is failed all the same (a handler that swallows ``CancelledError`` runs on, detached).
CANCEL_GRACE_SECONDS = 1.0

_EVENT_LOCK = threading.Lock()


class JobContext:
    """What a running handler can learn about its job: ``pgq.current_job()``.

    ``job`` is the claimed row; ``cancelled`` is an Event set when the job was
    cancelled, rescued or timed out meanwhile (a handler may check it and stop).
    """

    __slots__ = ("_cancelled", "job", "loop", "task")

    def __init__(self, job: Job) -> None:
        self.job = job
        # Created on first use: most jobs never look at it, and an Event costs
        # more than running a no-op job.
        self._cancelled: threading.Event | None = None
        # Set for async handlers so that a cancel can interrupt the coroutine.
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def cancelled(self) -> threading.Event:
        event = self._cancelled
        if event is None:
            with _EVENT_LOCK:
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    def cancel(self) -> None:
        """Tell the handler to stop: sets ``cancelled``; cancels an async handler's task."""
        self.cancelled.set()
        if self.task is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("pgq_current_job")


def current_job() -> JobContext:
    """The context of the job the calling handler runs (raises LookupError outside one)."""
    return _current.get()


def _storable(text: str) -> str:
    """``text`` as Postgres can store it: NUL and lone surrogates escaped.

    Otherwise writing the outcome fails on every retry and blocks the worker's acks.
    """
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def failure(exc: BaseException) -> Failed:
    """Turn an exception raised by a handler into a ``Failed`` outcome."""
    trace = _storable("".join(tb.format_exception(exc)))
    if isinstance(exc, Retry):
        return Failed("Retry", _storable(str(exc)), trace, retry_delay=exc.after)
    if isinstance(exc, Fatal):
        return Failed("Fatal", _storable(str(exc.reason or "")) or "handler raised Fatal", trace, fatal=True)
    return Failed(_storable(type(exc).__name__), _storable(str(exc)), trace)


@functools.lru_cache(maxsize=4096)
def _misfit_of_keys(fn: Callable[..., Any], keys: frozenset[str]) -> str | None:
    """Why a payload with these keys does not fit ``fn`` (None: it fits). Whether
    keyword arguments bind depends on their names only, so this is cached."""
    try:
        inspect.signature(fn).bind(**dict.fromkeys(keys))
    except TypeError as exc:
        return str(exc)
    return None


def _misfit(fn: Callable[..., Any], payload: dict[str, Any]) -> Failed | None:
    """A fatal failure when the payload does not fit the handler's parameters."""
    why = _misfit_of_keys(fn, frozenset(payload))
    if why is not None:
        return Failed("PayloadMismatch", f"payload does not fit the handler: {why}", fatal=True)
    return None


def _completed(result: Any) -> Outcome:
    if result is None:
        return Completed(None)
    try:
        return Completed(encode_json(result, "handler result"))
    except ValidationError as exc:
        return Failed("ResultNotSerialisable", str(exc), fatal=True)


def run_sync(fn: Callable[..., Any], ctx: JobContext) -> Outcome:
    """Call a sync handler with the job's payload as keyword arguments."""
    misfit = _misfit(fn, ctx.job.payload)
    if misfit is not None:
        return misfit
    token = _current.set(ctx)
    try:
        return _completed(fn(**ctx.job.payload))
    except Exception as exc:  # every handler error becomes an outcome; nothing escapes the worker
        return failure(exc)
    finally:
        _current.reset(token)


async def run_async(fn: Callable[..., Any], ctx: JobContext, timeout: float | None) -> Outcome:
    """Await an async handler, cancelling it after ``timeout`` seconds."""
    misfit = _misfit(fn, ctx.job.payload)
    if misfit is not None:
        return misfit
    ctx.loop = asyncio.get_running_loop()
    token = _current.set(ctx)
    try:
        task = ctx.task = asyncio.ensure_future(fn(**ctx.job.payload))
        if ctx.cancelled.is_set():
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:  # the job's timeout
            task.cancel()
            # Not wait_for: it waits for the cancelled task however long it takes, so a
            # handler that swallows CancelledError held its job (and its slot) forever.
            done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
            if not done:
                log.warning("the async handler of job %s ignored its cancellation at its timeout; it runs on, "
                            "detached, and its job is failed as timed out", ctx.job.id)
            return timed_out(timeout)
        return _completed(task.result())
    except TimeoutError:
        if ctx.task is not None and ctx.task.done() and not ctx.task.cancelled():
            own = ctx.task.exception()
            if own is not None:
                # The handler raised TimeoutError itself (e.g. a network call): not the job timeout.
                return failure(own)
        return timed_out(timeout)
    except asyncio.CancelledError:
        # Cancelled on purpose (the job was cancelled); the outcome is discarded.
        return Failed("Cancelled", "the job was cancelled while running")
    except Exception as exc:
        return failure(exc)
    finally:
        _current.reset(token)


def timed_out(timeout: float | None) -> Failed:
    return Failed("JobTimeout", f"attempt ran longer than its timeout of {timeout} s", outcome="timed_out")


def unknown_task(job: Job) -> Failed:
    return Failed(
        "UnknownTask",
        f"no handler is registered for task {job.task!r} in this worker",
        fatal=True,
    )
