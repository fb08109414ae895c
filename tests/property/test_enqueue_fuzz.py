"""Fuzzing ``Queue.enqueue`` against Postgres: valid arguments round-trip, invalid ones write nothing.

Hypothesis draws every argument from a mix of valid values and hostile ones
(wrong types, out-of-range and non-finite numbers, NUL characters, lone
surrogates, trailing newlines, SQL quotes, oversized payloads). The oracle is
written from the documented rules (README, "Errors"), not from pgq's code:

- task: 1-200 ASCII letters, digits or ``_ . : -``, not starting with a digit,
  ``.``, ``:`` or ``-``; queue: 1-100 of the same, starting with a letter or digit;
- payload: a dict with string keys, JSON-serialisable with finite numbers, no
  NUL character and no text that is not valid UTF-8, at most
  ``max_payload_bytes`` (the strategy keeps ordinary payloads far below the
  limit and oversized ones far above it, so the oracle needs no byte counting);
- priority 1-5, delay 0 to a year (seconds or timedelta), max_attempts
  1-1000, timeout a microsecond (the database's resolution) to a year,
  unique_key 1-200 characters of valid, NUL-free text; ``bool`` is never a
  number.

The ``@example``s pin edge cases this test (and the bad-input matrix) found:
a timeout below a microsecond (pgq accepted it, the database stored 0 and
refused it), a trailing newline in a name (``re.match`` with ``$`` let it past
pgq's checks), a string that spells ``\u0000`` without containing a NUL
(refused as if it did), and numbers jsonb writes differently (1e16, -0.0).

A valid call must return an id whose row reads back with exactly those values
(a unique key already held by a live job returns that job instead); an
invalid one must raise ``ValidationError`` and leave the jobs table as it was.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pgq

pytestmark = [pytest.mark.integration]

LIMIT = 4096
YEAR = 366 * 24 * 3600.0

NAME_CHARS = "abcXYZ019_.:-"
NASTY_CHARS = ["\x00", "\ud800", "\n", " ", "'", '"', ";", "\\", "é", "\u2028", "\U0001f600", "\x7f"]


def names(max_size: int) -> st.SearchStrategy[Any]:
    valid_ish = st.text(alphabet=st.sampled_from(NAME_CHARS), min_size=0, max_size=max_size + 2)
    nasty = st.text(alphabet=st.one_of(st.sampled_from(NAME_CHARS), st.sampled_from(NASTY_CHARS)), max_size=12)
    return st.one_of(valid_ish, valid_ish.map(lambda s: s + "\n"), nasty, st.integers(), st.none())


text_values = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(NASTY_CHARS)), max_size=12)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), text_values,
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text_values, inner, max_size=3)), max_leaves=8)
payloads = st.one_of(
    st.dictionaries(text_values, json_values, max_size=4),                      # ordinary (< 1 KB)
    st.dictionaries(text_values, json_values, max_size=4).map(lambda d: {**d, "big": "x" * (2 * LIMIT)}),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),       # non-string keys
    st.lists(st.integers(), max_size=2), st.text(max_size=5), st.integers(),    # not a dict
    st.just({"obj": object()}), st.just({"raw": b"bytes"}),
)
numbers = st.one_of(st.integers(min_value=-3, max_value=10**9), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=3))
maybe = st.one_of(st.none(), numbers)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _jsonable(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_jsonable(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _storable_text(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def expected_error(task: Any, payload: Any, queue: Any, priority: Any, delay: Any, max_attempts: Any, timeout: Any,
                   unique_key: Any) -> str | None:
    """The first documented rule the arguments break, or None when the call is valid."""
    if not (isinstance(task, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}", task, re.ASCII)):
        return "task"
    if not (isinstance(queue, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}", queue, re.ASCII)):
        return "queue"
    if not isinstance(payload, dict) or not _jsonable(payload):
        return "payload type"
    if not _finite(payload) or not all(_storable_text(t) for t in _texts(payload)):
        return "payload content"
    if "big" in payload and payload["big"] == "x" * (2 * LIMIT):
        return "payload size"
    if priority is not None and not (_is_number(priority) and isinstance(priority, int) and 1 <= priority <= 5):
        return "priority"
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    if delay is not None and not (_is_number(seconds) and 0 <= seconds <= YEAR):
        return "delay"
    if max_attempts is not None and not (
            _is_number(max_attempts) and isinstance(max_attempts, int) and 1 <= max_attempts <= 1000):
        return "max_attempts"
    if timeout is not None and not (_is_number(timeout) and 1e-6 <= timeout <= YEAR):
        return "timeout"
    if unique_key is not None and not (
            isinstance(unique_key, str) and 1 <= len(unique_key) <= 200 and _storable_text(unique_key)):
        return "unique_key"
    return None


def same_json(sent: Any, stored: Any) -> bool:
    """JSON equality as jsonb keeps it: numbers compare by value (1e16 comes back as 10000000000000000)."""
    if _is_number(sent) and _is_number(stored):
        return Decimal(repr(sent)) == Decimal(repr(stored))
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(same_json(sent[k], stored[k]) for k in sent)
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(same_json(a, b) for a, b in zip(sent, stored, strict=True))
    return type(sent) is type(stored) and sent == stored


@pytest.fixture
def fuzz_queue(settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=settings.replace(max_payload_bytes=LIMIT), strict_tasks=False)
    yield queue
    queue.close()


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgq.jobs").fetchone()
    assert row is not None
    return int(row[0])


@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    task=names(200), payload=payloads, queue=names(100),
    priority=maybe, delay=st.one_of(maybe, st.timedeltas(min_value=dt.timedelta(days=-2),
                                                         max_value=dt.timedelta(days=400))),
    max_attempts=maybe, timeout=maybe,
    unique_key=st.one_of(st.none(), st.text(alphabet=st.one_of(st.characters(), st.sampled_from(NASTY_CHARS)),
                                            max_size=6), st.integers(), st.just("k" * 201)),
)
@example(task="t", payload={}, queue="q", priority=None, delay=None, max_attempts=None, timeout=5e-324,
         unique_key=None)
@example(task="t\n", payload={}, queue="q", priority=None, delay=None, max_attempts=None, timeout=None,
         unique_key=None)
@example(task="t", payload={}, queue="q\n", priority=None, delay=None, max_attempts=None, timeout=None,
         unique_key=None)
@example(task="t", payload={"\\u0000": "\\u0000"}, queue="q", priority=None, delay=None, max_attempts=None,
         timeout=None, unique_key="\\u0000")
@example(task="t", payload={"a": 1e16, "b": -0.0, "c": 5e-324}, queue="q", priority=5, delay=dt.timedelta(days=366),
         max_attempts=1000, timeout=1e-6, unique_key="k" * 200)
def test_enqueue_accepts_exactly_the_valid_arguments(
    fuzz_queue: pgq.Queue, conn: psycopg.Connection[Any], task: Any, payload: Any, queue: Any, priority: Any,
    delay: Any, max_attempts: Any, timeout: Any, unique_key: Any,
) -> None:
    problem = expected_error(task, payload, queue, priority, delay, max_attempts, timeout, unique_key)
    options = {k: v for k, v in {"queue": queue, "priority": priority, "delay": delay, "max_attempts": max_attempts,
                                 "timeout": timeout, "unique_key": unique_key}.items() if v is not None}
    before = _count(conn)
    live = None if problem is not None or unique_key is None else conn.execute(
        "SELECT id FROM pgq.jobs WHERE unique_key = %s", (unique_key,)).fetchone()

    if problem is not None:
        with pytest.raises(pgq.ValidationError):
            fuzz_queue.enqueue(task, payload, **options)
        assert _count(conn) == before, problem
        return

    started = conn.execute("SELECT now()").fetchone()[0]
    job_id = fuzz_queue.enqueue(task, payload, **options)
    job = fuzz_queue.get(job_id)
    if live is not None:  # idempotent enqueue: the live job's id, nothing new
        assert job_id == live[0] and _count(conn) == before
        return
    assert _count(conn) == before + 1
    assert (job.task, job.queue, job.status) == (task, queue, pgq.JobStatus.QUEUED)
    assert same_json(payload, job.payload), (payload, job.payload)
    assert job.priority == (3 if priority is None else priority)
    assert job.max_attempts == (3 if max_attempts is None else max_attempts)
    assert job.unique_key == unique_key
    if timeout is None:
        assert job.timeout is None
    else:
        assert job.timeout_seconds == pytest.approx(timeout, abs=1e-6)
    seconds = 0.0 if delay is None else (delay.total_seconds() if isinstance(delay, dt.timedelta) else delay)
    # run_at = the database's now() + delay, at or after the moment the call started.
    assert dt.timedelta(seconds=seconds) - dt.timedelta(milliseconds=1) <= job.run_at - started
    assert job.run_at - started <= dt.timedelta(seconds=seconds + 60)
