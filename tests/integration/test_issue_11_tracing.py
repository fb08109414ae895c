"""OpenTelemetry tracing (issue 11, item 8), Postgres-only and with the Redis accelerator.

A request span in the producer encloses enqueues through each path (one
INSERT, COPY, the unique-key function, a graph); a worker runs the jobs; the
SDK's in-memory exporter then holds one trace per request: request ->
``pgq.enqueue`` -> ``pgq.attempt`` (-> a span the handler opens). Failures set
the attempt span's error status. With tracing off nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgq

pytestmark = [pytest.mark.integration, pytest.mark.both_modes]

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The SDK with an in-memory exporter, as the process's tracer provider (set once: the API allows no other)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return provider


@pytest.fixture
def spans(provider: TracerProvider) -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def q(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=settings.replace(tracing=True))
    yield queue
    queue.close()


def register(q: pgq.Queue) -> None:
    tracer = trace.get_tracer("tests")

    @q.task(name="ok")
    def ok(n: int = 0) -> int:
        with tracer.start_as_current_span("handler work"):
            return n

    @q.task(name="boom", max_attempts=1)
    def boom() -> None:
        raise ValueError("it broke")

    @q.task(name="later")
    async def later() -> str:
        with tracer.start_as_current_span("async handler work"):
            return "done"


def run_all(q: pgq.Queue, jobs: int) -> None:
    worker = q.worker(concurrency=4, install_signal_handlers=False)
    ran = 0
    for _ in range(50):
        ran += worker.run_once()
        if ran >= jobs:
            return
    raise AssertionError(f"ran {ran} of {jobs} jobs")


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def attempt_of(spans: InMemorySpanExporter, job_id: int) -> ReadableSpan:
    (span,) = [s for s in named(spans, "pgq.attempt") if s.attributes and s.attributes["pgq.job.id"] == job_id]
    return span


def test_one_trace_runs_from_the_request_through_each_enqueue_path_to_the_worker(
        q: pgq.Queue, spans: InMemorySpanExporter) -> None:
    register(q)
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        single = q.enqueue("ok", {"n": 1})  # one INSERT
        batch = q.enqueue_many([{"task": "ok", "payload": {"n": i}} for i in range(3)])  # COPY
        unique = q.enqueue("ok", {"n": 9}, unique_key="k")  # enqueue_jobs() + attach_trace_context()
        parent = q.enqueue("later")
        child = q.enqueue("ok", depends_on=[parent])  # enqueue_jobs_v2() + attach_trace_context()
    run_all(q, 7)
    trace_id = request.get_span_context().trace_id
    enqueues = named(spans, "pgq.enqueue")
    assert len(enqueues) == 5
    for span in enqueues:
        assert span.kind == SpanKind.PRODUCER and span.parent is not None
        assert span.context.trace_id == trace_id and span.parent.span_id == request.get_span_context().span_id
    by_job = {s.attributes["pgq.job.id"]: s for s in enqueues if s.attributes and "pgq.job.id" in s.attributes}
    batch_span = next(s for s in enqueues if s.attributes and s.attributes["pgq.job_count"] == 3)
    expected_parent = {single: by_job[single], unique: by_job[unique], parent: by_job[parent], child: by_job[child],
                       **{job_id: batch_span for job_id in batch}}
    for job_id, enqueue in expected_parent.items():
        attempt = attempt_of(spans, job_id)
        assert attempt.kind == SpanKind.CONSUMER
        assert attempt.context.trace_id == trace_id
        assert attempt.parent is not None and attempt.parent.span_id == enqueue.context.span_id
        assert attempt.attributes is not None and attempt.attributes["pgq.outcome"] == "completed"
        assert attempt.attributes["pgq.attempt"] == 1 and attempt.status.status_code != StatusCode.ERROR
    # Spans the handlers open are children of their attempt (sync and async).
    for name, job_id in (("handler work", single), ("async handler work", parent)):
        work = [s for s in named(spans, name) if s.parent and s.parent.span_id == attempt_of(spans, job_id).context.span_id]
        assert len(work) == 1


def test_a_failed_attempt_sets_the_error_status(q: pgq.Queue, spans: InMemorySpanExporter) -> None:
    register(q)
    job_id = q.enqueue("boom")
    run_all(q, 1)
    attempt = attempt_of(spans, job_id)
    assert attempt.status.status_code == StatusCode.ERROR
    assert attempt.status.description == "ValueError: it broke"
    assert attempt.attributes is not None and attempt.attributes["pgq.outcome"] == "failed"
    (event,) = [e for e in attempt.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.type"] == "ValueError"
    assert "it broke" in str(event.attributes["exception.stacktrace"])
    # No producer span was current: the enqueue span is the root of the trace.
    (enqueue,) = named(spans, "pgq.enqueue")
    assert enqueue.parent is None and attempt.parent is not None
    assert attempt.parent.span_id == enqueue.context.span_id


def test_a_job_enqueued_by_a_handler_continues_the_trace(q: pgq.Queue, spans: InMemorySpanExporter) -> None:
    register(q)
    follow_up: list[int] = []

    @q.task(name="fan_out")
    def fan_out() -> None:
        follow_up.append(q.enqueue("ok"))

    first = q.enqueue("fan_out")
    run_all(q, 2)
    first_attempt = attempt_of(spans, first)
    (second_enqueue,) = [s for s in named(spans, "pgq.enqueue") if s.attributes and
                         s.attributes.get("pgq.job.id") == follow_up[0]]
    assert second_enqueue.parent is not None and second_enqueue.parent.span_id == first_attempt.context.span_id
    second_attempt = attempt_of(spans, follow_up[0])
    assert second_attempt.context.trace_id == first_attempt.context.trace_id
    assert second_attempt.parent is not None and second_attempt.parent.span_id == second_enqueue.context.span_id


def test_the_trace_context_is_stored_in_the_job(q: pgq.Queue, spans: InMemorySpanExporter,
                                                 conn: psycopg.Connection[Any]) -> None:
    register(q)
    job_id = q.enqueue("ok")
    (stored,) = conn.execute("SELECT trace_context FROM pgq.jobs WHERE id = %s", [job_id]).fetchone()
    (enqueue,) = named(spans, "pgq.enqueue")
    context = enqueue.context
    assert stored == {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
    assert q.get(job_id).trace_context == stored


def test_a_transactional_enqueue_stores_its_context_only_when_the_caller_commits(
        q: pgq.Queue, spans: InMemorySpanExporter, connect: Any, conn: psycopg.Connection[Any]) -> None:
    register(q)
    caller = connect(autocommit=False)
    ids = [q.enqueue("ok", unique_key="tx", connection=caller),  # enqueue_jobs() + attach_trace_context()
           *q.enqueue_many([{"task": "ok"}] * 2, connection=caller)]  # COPY
    visible = "SELECT count(*) FROM pgq.jobs WHERE id = ANY(%s) AND trace_context IS NOT NULL"
    assert conn.execute(visible, [ids]).fetchone() == (0,)  # nothing before the caller commits
    caller.commit()
    assert conn.execute(visible, [ids]).fetchone() == (3,)
    assert len(named(spans, "pgq.enqueue")) == 2


def test_with_tracing_off_no_span_and_no_context(settings: pgq.Settings, spans: InMemorySpanExporter,
                                                 conn: psycopg.Connection[Any]) -> None:
    with pgq.connect(settings=settings) as plain:
        register(plain)
        with trace.get_tracer("tests").start_as_current_span("request"):
            ids = [plain.enqueue("ok"), *plain.enqueue_many([{"task": "ok"}] * 2), plain.enqueue("ok", unique_key="u")]
        run_all(plain, 4)
    assert plain.tracer is None
    assert sorted(s.name for s in spans.get_finished_spans()) == ["handler work"] * 4 + ["request"]
    rows = conn.execute("SELECT count(*) FROM pgq.jobs WHERE id = ANY(%s) AND trace_context IS NULL", [ids]).fetchone()
    assert rows == (4,)


def test_attach_trace_context_refuses_what_is_not_an_object(conn: psycopg.Connection[Any]) -> None:
    import factories

    job_id = factories.insert_job(conn)
    for bad in ("[]", '"x"', None):
        with factories.raises_sqlstate("PQ004", match="must be a JSON object"):
            conn.execute("SELECT pgq.attach_trace_context(%s, %s::jsonb)", [[job_id], bad])
    context = json.dumps({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert conn.execute("SELECT pgq.attach_trace_context(%s, %s::jsonb)", [[job_id], context]).fetchone() == (1,)
    # Never moves a trace: a second context is not stored.
    assert conn.execute("SELECT pgq.attach_trace_context(%s, '{}')", [[job_id]]).fetchone() == (0,)
