"""OpenTelemetry spans for enqueues and attempts, with the trace context carried in the job.

With ``Settings.tracing`` on, ``Queue`` wraps each enqueue call (one job or a
batch) in a ``pgq.enqueue`` span (kind PRODUCER, a child of whatever span is
current in the caller) and stores that span's W3C context (``traceparent``,
``tracestate``: the globally configured propagator's fields) in
``jobs.trace_context``; the worker runs each attempt in a ``pgq.attempt`` span
(kind CONSUMER) whose parent is that context, so one trace runs from the
producer's request to the handler, and spans the handler opens are its
children. Tracing off, nothing here is imported and nothing is stored. The
application configures the SDK (provider, exporter); pgq only uses the API.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pgq.errors import ConfigurationError

if TYPE_CHECKING:
    from pgq.executor import Outcome
    from pgq.job import Job, JobSpec
    from pgq.settings import Settings

#: The instrumentation scope of pgq's spans.
SCOPE = "pgq"


def open_tracer(settings: Settings) -> Tracer | None:
    """The tracer when ``settings.tracing`` is on, else None.

    Raises:
        ConfigurationError: tracing is on and opentelemetry-api is not installed.
    """
    return Tracer() if settings.tracing else None


class Tracer:
    """Makes pgq's spans with the globally configured tracer provider and propagator."""

    def __init__(self) -> None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError:
            raise ConfigurationError("PGQ_TRACING needs the tracing extra: pip install 'pgq[tracing]'") from None
        self._trace = trace
        self._propagate = propagate
        self._context = context
        self._tracer = trace.get_tracer(SCOPE)

    # ------------------------------------------------------------ producer side
    @contextlib.contextmanager
    def enqueue(self, specs: Sequence[JobSpec]) -> Iterator[Enqueue]:
        """A ``pgq.enqueue`` span around one enqueue call; yields what to store in the jobs.

        An exception raised inside ends the span with an error status (and is re-raised).
        """
        kind = self._trace.SpanKind.PRODUCER
        with self._tracer.start_as_current_span("pgq.enqueue", kind=kind, attributes=_spec_attributes(specs)) as span:
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
            yield Enqueue(span, json.dumps(carrier, sort_keys=True))

    # ------------------------------------------------------------ worker side
    def start_attempt(self, job: Job) -> Any:
        """Start the ``pgq.attempt`` span of ``job``'s attempt, a child of its producer's span
        (a root span when the job carries no context)."""
        parent = self._propagate.extract(job.trace_context) if job.trace_context else None
        return self._tracer.start_span("pgq.attempt", context=parent, kind=self._trace.SpanKind.CONSUMER,
                                       attributes={"messaging.system": "pgq", "pgq.job.id": job.id,
                                                   "pgq.queue": job.queue, "pgq.task": job.task,
                                                   "pgq.attempt": job.attempts})

    @contextlib.contextmanager
    def current(self, span: Any) -> Iterator[None]:
        """Make ``span`` the current span of this thread (the handler's spans become its children)."""
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield
        finally:
            self._context.detach(token)

    def end_attempt(self, span: Any, outcome: Outcome | None) -> None:
        """End an attempt's span with its outcome: a failure sets the error status and an exception event."""
        from pgq.executor import Failed

        if isinstance(outcome, Failed):
            span.set_attribute("pgq.outcome", outcome.outcome)
            span.set_attribute("pgq.fatal", outcome.fatal)
            span.add_event("exception", {"exception.type": outcome.error_type, "exception.message": outcome.message,
                                         "exception.stacktrace": outcome.traceback or ""})
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{outcome.error_type}: {outcome.message}"))
        elif outcome is not None:
            span.set_attribute("pgq.outcome", "completed")
        span.end()

    def run(self, job: Job, run: Any) -> Outcome:
        """Call ``run()`` (a sync handler's attempt) inside the job's ``pgq.attempt`` span."""
        span = self.start_attempt(job)
        outcome: Outcome | None = None
        try:
            with self.current(span):
                outcome = run()
        finally:
            self.end_attempt(span, outcome)
        return outcome

    async def run_async(self, job: Job, attempt: Awaitable[Outcome]) -> Outcome:
        """Await ``attempt`` (an async handler's) inside the job's ``pgq.attempt`` span."""
        span = self.start_attempt(job)
        outcome: Outcome | None = None
        try:
            with self.current(span):
                outcome = await attempt
        finally:
            self.end_attempt(span, outcome)
        return outcome


class Enqueue:
    """The ``pgq.enqueue`` span of one call, and the trace context to store in its jobs (JSON)."""

    def __init__(self, span: Any, context_json: str) -> None:
        self.span = span
        self.context_json = context_json

    def enqueued(self, rows: Sequence[tuple[int, bool]]) -> None:
        """Record the ids (one job: ``pgq.job.id``; a batch: how many were created)."""
        if len(rows) == 1:
            self.span.set_attribute("pgq.job.id", rows[0][0])
        self.span.set_attribute("pgq.jobs_created", sum(1 for _, created in rows if created))


def _spec_attributes(specs: Sequence[JobSpec]) -> dict[str, Any]:
    """The enqueue span's attributes: queue and task when the call has one of each."""
    attributes: dict[str, Any] = {"messaging.system": "pgq", "pgq.job_count": len(specs)}
    queues = {s.queue for s in specs}
    tasks = {s.task for s in specs}
    if len(queues) == 1:
        attributes["pgq.queue"] = next(iter(queues))
    if len(tasks) == 1:
        attributes["pgq.task"] = next(iter(tasks))
    return attributes
