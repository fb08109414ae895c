"""JobSpec.build: every enqueue argument is validated once, and a bad one raises
``pgq.ValidationError`` naming it."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest

import pgq
from pgq.job import JobSpec

UTC = dt.UTC


def build(**overrides: Any) -> JobSpec:
    args: dict[str, Any] = {"task": "emails.send", "payload": {"to": "a@b.c"}, "queue": "emails"}
    args.update(overrides)
    task = args.pop("task")
    payload = args.pop("payload")
    return JobSpec.build(task, payload, **args)


def rejects(argument: str, **overrides: Any) -> pgq.ValidationError:
    """Build with ``overrides``; assert a ValidationError whose message names ``argument``."""
    with pytest.raises(pgq.ValidationError) as info:
        build(**overrides)
    assert isinstance(info.value, ValueError)  # usable as a plain ValueError too
    assert argument in str(info.value), f"{argument!r} not named in {str(info.value)!r}"
    return info.value


# ---------------------------------------------------------------- valid input


def test_build_with_defaults() -> None:
    spec = build()
    assert spec.task == "emails.send"
    assert json.loads(spec.payload_json) == {"to": "a@b.c"}
    assert spec.queue == "emails"
    assert spec.priority == 3
    assert spec.delay_seconds is None and spec.run_at is None
    assert spec.max_attempts == 3
    assert spec.timeout_seconds is None and spec.unique_key is None and spec.backoff is None


def test_build_normalises_durations_and_keeps_options() -> None:
    backoff = pgq.Backoff(base=2, factor=3, max=100, jitter=0)
    spec = build(priority=5, delay=dt.timedelta(minutes=2), max_attempts=1000, timeout=dt.timedelta(seconds=1.5),
                 unique_key="welcome:42", backoff=backoff)
    assert spec.priority == 5
    assert spec.delay_seconds == 120.0 and isinstance(spec.delay_seconds, float)
    assert spec.max_attempts == 1000
    assert spec.timeout_seconds == 1.5
    assert spec.unique_key == "welcome:42"
    assert spec.backoff is backoff


def test_none_payload_is_an_empty_object_and_json_is_compact_utf8() -> None:
    assert build(payload=None).payload_json == "{}"
    spec = build(payload={"name": "Zo\u00eb \u6771\u4eac", "n": [1, 2.5, None, True]})
    assert spec.payload_json == '{"name":"Zo\u00eb \u6771\u4eac","n":[1,2.5,null,true]}'


@pytest.mark.parametrize("priority", [1, 2, 3, 4, 5])
def test_every_priority_from_1_to_5_is_accepted(priority: int) -> None:
    assert build(priority=priority).priority == priority


def test_zero_delay_and_aware_run_at_are_accepted() -> None:
    assert build(delay=0).delay_seconds == 0.0
    when = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert build(run_at=when).run_at == when


@pytest.mark.parametrize("queue", ["a", "emails", "Q1", "0queue", "billing.eu-west:high_prio", "x" * 100])
def test_valid_queue_names(queue: str) -> None:
    assert build(queue=queue).queue == queue


@pytest.mark.parametrize("task", ["t", "_private", "app.tasks.send_email", "ns:task-1", "x" * 200])
def test_valid_task_names(task: str) -> None:
    assert build(task=task).task == task


def test_payload_exactly_at_the_size_limit_is_accepted() -> None:
    payload = {"x": "a" * 10}
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    assert build(payload=payload, max_payload_bytes=size).payload_json == '{"x":"aaaaaaaaaa"}'


def test_unique_key_of_200_characters_is_accepted() -> None:
    assert build(unique_key="k" * 200).unique_key == "k" * 200


# ---------------------------------------------------------------- priority


@pytest.mark.parametrize("priority", [0, 6, -1, True, False, "3", 3.0, None])
def test_priority_out_of_range_or_wrong_type(priority: object) -> None:
    rejects("priority", priority=priority)


# ---------------------------------------------------------------- delay / run_at


@pytest.mark.parametrize("delay", [-1, -0.001, dt.timedelta(seconds=-1), math.nan, math.inf, "10", True])
def test_bad_delay(delay: object) -> None:
    rejects("delay", delay=delay)


def test_delay_and_run_at_together() -> None:
    err = rejects("delay", delay=5, run_at=dt.datetime(2030, 1, 1, tzinfo=UTC))
    assert "run_at" in str(err)


@pytest.mark.parametrize("run_at", [dt.datetime(2030, 1, 1, 12, 0), "2030-01-01T12:00:00+00:00", dt.date(2030, 1, 1)])
def test_naive_or_non_datetime_run_at(run_at: object) -> None:
    rejects("run_at", run_at=run_at)


# ---------------------------------------------------------------- attempts / timeout


@pytest.mark.parametrize("max_attempts", [0, -1, 1001, True, 2.0, "3"])
def test_bad_max_attempts(max_attempts: object) -> None:
    rejects("max_attempts", max_attempts=max_attempts)


@pytest.mark.parametrize("timeout", [0, -5, dt.timedelta(0), math.nan, math.inf, "30", False])
def test_bad_timeout(timeout: object) -> None:
    rejects("timeout", timeout=timeout)


# ---------------------------------------------------------------- queue / task names


@pytest.mark.parametrize(
    "queue",
    ["", "has space", "it's", 'say"hi"', "a;drop table jobs", "caf\u00e9", "\u961f\u5217", "x" * 101, "-lead",
     ".lead", "tab\there", "new\nline", None, 5],
)
def test_bad_queue_names(queue: object) -> None:
    rejects("queue", queue=queue)


@pytest.mark.parametrize(
    "task",
    ["", "1starts_with_digit", "has space", "semi;colon", "quote'", "\u00e9t\u00e9", "x" * 201, None, b"bytes"],
)
def test_bad_task_names(task: object) -> None:
    rejects("task", task=task)


# ---------------------------------------------------------------- payload


@pytest.mark.parametrize("payload", [[1, 2], "text", 42, (("a", 1),), {"a", "b"}])
def test_payload_must_be_a_dict(payload: object) -> None:
    rejects("payload", payload=payload)


def test_payload_keys_must_be_strings() -> None:
    rejects("payload", payload={1: "one"})


@pytest.mark.parametrize(
    "payload",
    [
        {"when": dt.datetime(2030, 1, 1, tzinfo=UTC)},
        {"obj": object()},
        {"raw": b"bytes"},
        {"nested": {"set": {1, 2}}},
    ],
)
def test_payload_not_json_serialisable(payload: dict[str, Any]) -> None:
    err = rejects("payload", payload=payload)
    assert "JSON" in str(err)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_payload_with_non_finite_float(value: float) -> None:
    rejects("payload", payload={"x": [1.0, value]})


@pytest.mark.parametrize("payload", [{"s": "a\x00b"}, {"k\x00": 1}, {"deep": [{"s": "\x00"}]}])
def test_payload_with_nul_character(payload: dict[str, Any]) -> None:
    err = rejects("payload", payload=payload)
    assert "NUL" in str(err)


def test_payload_with_lone_surrogate_is_not_utf8() -> None:
    err = rejects("payload", payload={"s": "\ud800"})
    assert "UTF-8" in str(err)


def test_payload_over_the_size_limit_names_the_setting() -> None:
    payload = {"x": "a" * 10}
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    err = rejects("payload", payload=payload, max_payload_bytes=size - 1)
    assert "PGQ_MAX_PAYLOAD_BYTES" in str(err)
    assert str(size) in str(err)


def test_payload_size_counts_bytes_not_characters() -> None:
    payload = {"x": "\u00e9" * 10}  # 10 characters, 20 bytes in UTF-8
    chars = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))
    rejects("payload", payload=payload, max_payload_bytes=chars)


# ---------------------------------------------------------------- unique_key / backoff


@pytest.mark.parametrize("key", ["", "k" * 201, 42, b"bytes"])
def test_bad_unique_key(key: object) -> None:
    rejects("unique_key", unique_key=key)


def test_unique_key_with_nul_character() -> None:
    rejects("unique_key", unique_key="a\x00b")


def test_unique_key_with_lone_surrogate() -> None:
    rejects("unique_key", unique_key="key-\udfff")


def test_backoff_must_be_a_backoff() -> None:
    rejects("retry", backoff={"base": 1})
