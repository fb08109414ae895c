"""pgq.executor: running one handler and turning what happened into an Outcome."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import threading
import uuid
from typing import Any

import pytest

import pgq
from pgq.executor import CANCEL_GRACE_SECONDS, Completed, Failed, JobContext, run_async, run_sync, unknown_task
from pgq.job import Job, JobStatus

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def make_job(payload: dict[str, Any] | None = None, *, job_id: int = 7, timeout: float | None = None) -> Job:
    return Job(
        id=job_id, queue="default", task="tests.handler", payload=payload or {}, priority=3,
        status=JobStatus.RUNNING, run_at=NOW, attempts=1, max_attempts=3,
        timeout=None if timeout is None else dt.timedelta(seconds=timeout), unique_key=None,
        worker_id=uuid.uuid4(), started_at=NOW, finished_at=None, result=None, last_error=None,
        created_at=NOW, updated_at=NOW,
    )


def ctx_for(payload: dict[str, Any] | None = None, **kwargs: Any) -> JobContext:
    return JobContext(make_job(payload, **kwargs))


# ---------------------------------------------------------------- run_sync: results


@pytest.mark.parametrize(
    ("result", "expected_json"),
    [
        ({"sent": True, "id": 3}, '{"sent":true,"id":3}'),
        ([1, "two", None], '[1,"two",null]'),
        ("Zo\u00eb", '"Zo\u00eb"'),
        (0, "0"),
        (False, "false"),
    ],
)
def test_run_sync_encodes_the_result_as_json(result: Any, expected_json: str) -> None:
    outcome = run_sync(lambda: result, ctx_for())
    assert outcome == Completed(expected_json)


def test_run_sync_none_result_is_stored_as_null() -> None:
    assert run_sync(lambda: None, ctx_for()) == Completed(None)


def test_run_sync_passes_the_payload_as_keyword_arguments() -> None:
    def add(a: int, b: int, *, scale: int = 1) -> dict[str, int]:
        return {"sum": (a + b) * scale}

    outcome = run_sync(add, ctx_for({"a": 2, "b": 3, "scale": 10}))
    assert isinstance(outcome, Completed)
    assert json.loads(outcome.result_json or "null") == {"sum": 50}


# ---------------------------------------------------------------- run_sync: failures


def test_ordinary_exception_is_a_retryable_failure_with_traceback() -> None:
    def handler() -> None:
        raise ConnectionError("smtp down")

    outcome = run_sync(handler, ctx_for())
    assert isinstance(outcome, Failed)
    assert (outcome.error_type, outcome.message) == ("ConnectionError", "smtp down")
    assert outcome.fatal is False and outcome.retry_delay is None and outcome.outcome == "failed"
    assert outcome.traceback is not None
    assert "ConnectionError: smtp down" in outcome.traceback
    assert "in handler" in outcome.traceback


@pytest.mark.parametrize("after", [0, 2.5, 3600])
def test_retry_signal_sets_retry_delay(after: float) -> None:
    def handler() -> None:
        raise pgq.Retry(after=after, reason="rate limited")

    outcome = run_sync(handler, ctx_for())
    assert isinstance(outcome, Failed)
    assert outcome.error_type == "Retry"
    assert outcome.retry_delay == float(after)
    assert outcome.fatal is False
    assert "rate limited" in outcome.message


@pytest.mark.parametrize("after", [-1, True, "5", math.nan])
def test_retry_signal_validates_after(after: object) -> None:
    with pytest.raises(pgq.ValidationError, match="after"):
        pgq.Retry(after=after)  # type: ignore[arg-type]


def test_fatal_signal_is_a_fatal_failure() -> None:
    def handler() -> None:
        raise pgq.Fatal("address does not exist", address="x@y")

    outcome = run_sync(handler, ctx_for())
    assert isinstance(outcome, Failed)
    assert (outcome.error_type, outcome.message, outcome.fatal) == ("Fatal", "address does not exist", True)
    assert outcome.retry_delay is None


def test_fatal_without_reason_still_has_a_message() -> None:
    def handler() -> None:
        raise pgq.Fatal()

    outcome = run_sync(handler, ctx_for())
    assert isinstance(outcome, Failed) and outcome.fatal and outcome.message


@pytest.mark.parametrize("text", ["bad\x00byte", "lone \ud800 surrogate"])
def test_failure_text_is_always_storable_in_postgres(text: str) -> None:
    # Postgres text cannot hold NUL, and a lone surrogate is not UTF-8: such an
    # error message must not make the outcome unwritable.
    def handler() -> None:
        raise ValueError(text)

    outcome = run_sync(handler, ctx_for())
    assert isinstance(outcome, Failed)
    for field in (outcome.error_type, outcome.message, outcome.traceback or ""):
        assert "\x00" not in field
        field.encode("utf-8")  # raises UnicodeEncodeError if not storable
    assert outcome.message.startswith(text[:3])


def test_signals_are_not_pgq_errors() -> None:
    assert not issubclass(pgq.Retry, pgq.PgqError)
    assert not issubclass(pgq.Fatal, pgq.PgqError)


@pytest.mark.parametrize(
    "payload",
    [{"b": 1}, {"a": 1, "extra": 2}, {}],
    ids=["wrong-name", "unexpected-extra", "missing"],
)
def test_payload_not_fitting_the_signature_is_a_fatal_payload_mismatch(payload: dict[str, Any]) -> None:
    called = []

    def handler(a: int) -> None:
        called.append(a)

    outcome = run_sync(handler, ctx_for(payload))
    assert isinstance(outcome, Failed)
    assert outcome.error_type == "PayloadMismatch"
    assert outcome.fatal is True
    assert called == []  # the handler never ran


def test_type_error_inside_the_handler_is_not_a_payload_mismatch() -> None:
    def handler(a: int) -> None:
        raise TypeError("bug inside the handler")

    outcome = run_sync(handler, ctx_for({"a": 1}))
    assert isinstance(outcome, Failed)
    assert (outcome.error_type, outcome.fatal) == ("TypeError", False)


@pytest.mark.parametrize("result", [object(), {"when": NOW}, {"x": math.nan}, {"s": "a\x00b"}, {1, 2}])
def test_non_json_result_is_a_fatal_failure(result: Any) -> None:
    outcome = run_sync(lambda: result, ctx_for())
    assert isinstance(outcome, Failed)
    assert outcome.error_type == "ResultNotSerialisable"
    assert outcome.fatal is True


def test_unknown_task_is_fatal_and_names_the_task() -> None:
    outcome = unknown_task(make_job())
    assert outcome.fatal and outcome.error_type == "UnknownTask"
    assert "tests.handler" in outcome.message


# ---------------------------------------------------------------- current_job


def test_current_job_inside_a_sync_handler() -> None:
    seen: list[pgq.JobContext] = []

    def handler() -> int:
        seen.append(pgq.current_job())
        return pgq.current_job().job.id

    ctx = ctx_for(job_id=4242)
    assert run_sync(handler, ctx) == Completed("4242")
    assert seen == [ctx]
    assert seen[0].cancelled.is_set() is False


def test_current_job_outside_a_handler_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        pgq.current_job()
    run_sync(lambda: None, ctx_for())
    with pytest.raises(LookupError):  # reset after the handler, even after an error
        pgq.current_job()

    def boom() -> None:
        raise RuntimeError

    run_sync(boom, ctx_for())
    with pytest.raises(LookupError):
        pgq.current_job()


def test_current_job_is_per_thread() -> None:
    ids: dict[int, int] = {}
    barrier = threading.Barrier(2)

    def handler() -> None:
        barrier.wait(timeout=10)  # both handlers run at the same time
        ids[threading.get_ident()] = pgq.current_job().job.id

    threads = [threading.Thread(target=run_sync, args=(handler, ctx_for(job_id=i))) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(ids.values()) == [1, 2]


def test_cancel_sets_the_event_a_sync_handler_observes() -> None:
    ctx = ctx_for()
    ctx.cancel()

    def handler() -> bool:
        return pgq.current_job().cancelled.is_set()

    assert run_sync(handler, ctx) == Completed("true")


# ---------------------------------------------------------------- run_async


def test_run_async_completes_and_sees_current_job() -> None:
    async def handler(n: int) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"n": n, "job": pgq.current_job().job.id}

    outcome = asyncio.run(run_async(handler, ctx_for({"n": 5}, job_id=99), timeout=5))
    assert outcome == Completed('{"n":5,"job":99}')


def test_run_async_timeout_is_timed_out() -> None:
    cancelled = []

    async def handler() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    outcome = asyncio.run(run_async(handler, ctx_for(), timeout=0.05))
    assert isinstance(outcome, Failed)
    assert outcome.outcome == "timed_out"
    assert outcome.error_type == "JobTimeout"
    assert outcome.fatal is False
    assert cancelled == [True]  # the coroutine was really stopped


@pytest.mark.timeout(CANCEL_GRACE_SECONDS + 10)
def test_run_async_timeout_of_a_handler_that_swallows_its_cancellation_still_ends_the_attempt() -> None:
    """Before, wait_for waited for the cancelled handler however long it ran on: the
    job held its slot forever and was never failed."""
    swallowed: list[bool] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(True)  # and carries on
        await asyncio.Event().wait()  # until asyncio.run cancels it again at its end

    outcome = asyncio.run(run_async(handler, ctx_for(), timeout=0.05))
    assert isinstance(outcome, Failed)
    assert (outcome.outcome, outcome.error_type) == ("timed_out", "JobTimeout")
    assert swallowed == [True]


def test_run_async_handler_raising_timeout_error_is_an_ordinary_failure() -> None:
    # A TimeoutError of the handler's own (a network call) is not the job timeout.
    async def handler() -> None:
        raise TimeoutError("upstream did not answer")

    outcome = asyncio.run(run_async(handler, ctx_for(), timeout=30))
    assert isinstance(outcome, Failed)
    assert outcome.outcome == "failed"
    assert (outcome.error_type, outcome.message) == ("TimeoutError", "upstream did not answer")


def test_run_async_without_timeout_runs_to_the_end() -> None:
    async def handler() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert asyncio.run(run_async(handler, ctx_for(), timeout=None)) == Completed('"done"')


def test_run_async_signals_and_errors() -> None:
    async def retry() -> None:
        raise pgq.Retry(after=9)

    async def fatal() -> None:
        raise pgq.Fatal("nope")

    async def boom() -> None:
        raise KeyError("k")

    r = asyncio.run(run_async(retry, ctx_for(), 5))
    f = asyncio.run(run_async(fatal, ctx_for(), 5))
    b = asyncio.run(run_async(boom, ctx_for(), 5))
    assert isinstance(r, Failed) and r.retry_delay == 9.0 and not r.fatal
    assert isinstance(f, Failed) and f.fatal and f.message == "nope"
    assert isinstance(b, Failed) and b.error_type == "KeyError" and not b.fatal


def test_run_async_payload_mismatch_and_bad_result() -> None:
    async def handler(a: int) -> object:
        return object()

    mismatch = asyncio.run(run_async(handler, ctx_for({"z": 1}), 5))
    bad = asyncio.run(run_async(handler, ctx_for({"a": 1}), 5))
    assert isinstance(mismatch, Failed) and mismatch.error_type == "PayloadMismatch" and mismatch.fatal
    assert isinstance(bad, Failed) and bad.error_type == "ResultNotSerialisable" and bad.fatal


def test_run_async_cancel_stops_the_coroutine() -> None:
    async def main() -> tuple[Any, JobContext]:
        ctx = ctx_for()
        started = asyncio.Event()

        async def handler() -> str:
            started.set()
            await asyncio.sleep(30)
            return "finished"

        task = asyncio.ensure_future(run_async(handler, ctx, timeout=None))
        await asyncio.wait_for(started.wait(), 5)
        ctx.cancel()  # what the worker does when the job is cancelled
        return await asyncio.wait_for(task, 5), ctx

    outcome, ctx = asyncio.run(main())
    assert isinstance(outcome, Failed)
    assert outcome.error_type == "Cancelled"
    assert ctx.cancelled.is_set()


def test_run_async_cancelled_before_start_never_runs_the_body() -> None:
    ran = []

    async def handler() -> None:
        ran.append(True)

    ctx = ctx_for()
    ctx.cancelled.set()
    outcome = asyncio.run(run_async(handler, ctx, timeout=None))
    assert isinstance(outcome, Failed) and outcome.error_type == "Cancelled"
    assert ran == []
