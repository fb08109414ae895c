"""``enqueue_many`` writes batches with COPY in text format: every value must survive it.

pgq formats the COPY lines itself (``pgq.queries.enqueue._copy_lines``), so escaping is
its own responsibility. Hypothesis draws batches of valid jobs whose payloads
hold the characters the COPY text format treats specially (backslash, tab,
newline, carriage return, the ``\\N`` null marker) among arbitrary Unicode,
and whose options mix defaults with delays, timeouts and retry policies (each
mix picks a different column list). The oracle is the job as the caller
described it: each row must read back with that payload and those options,
in input order, and the batch must equal what one ``enqueue`` per job stores.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgq

pytestmark = [pytest.mark.integration]

SPECIAL = ["\\", "\t", "\n", "\r", "N", ".", "é", "\u2028", "\U0001f600", "'", '"', "\x7f", "\x01"]
texts = st.one_of(
    st.text(alphabet=st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               st.sampled_from(SPECIAL)), max_size=10),
    st.sampled_from(["\\N", "\\.", "\\\\", "a\tb\nc\r", "\\u0041"]),  # COPY's markers, verbatim
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**15), max_value=10**15),
                    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 3) or 0.0), texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(texts, inner, max_size=3)), max_leaves=6)
jobs = st.fixed_dictionaries(
    {"payload": st.dictionaries(texts, values, max_size=3)},
    optional={
        "priority": st.integers(min_value=1, max_value=5),
        "delay": st.floats(min_value=0, max_value=3600),
        "timeout": st.floats(min_value=1e-6, max_value=3600),
        "max_attempts": st.integers(min_value=1, max_value=20),
        "retry": st.builds(pgq.Backoff, base=st.floats(min_value=0.01, max_value=10),
                           factor=st.floats(min_value=1, max_value=4), max=st.just(1000.0),
                           jitter=st.floats(min_value=0, max_value=0.99)),
    },
)


def _rows(conn: psycopg.Connection[Any], ids: list[int]) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT id, payload, priority, max_attempts, extract(epoch FROM timeout)::float8,"
        " retry_base_seconds, retry_factor, retry_max_seconds, retry_jitter,"
        " extract(epoch FROM run_at - created_at)::float8"
        " FROM pgq.jobs WHERE id = ANY(%s) ORDER BY array_position(%s, id)", (ids, ids)).fetchall()
    return rows


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(jobs, min_size=2, max_size=8))
def test_a_copied_batch_reads_back_as_described(settings: pgq.Settings, conn: psycopg.Connection[Any],
                                                 batch: list[dict[str, Any]]) -> None:
    queue = pgq.connect(settings=settings, strict_tasks=False)
    try:
        specs = [queue.job_spec("fuzz.copy", job["payload"], **{k: v for k, v in job.items() if k != "payload"})
                 for job in batch]
        ids = queue.enqueue_many(specs)
        one_by_one = [queue.enqueue("fuzz.copy", job["payload"], **{k: v for k, v in job.items() if k != "payload"})
                      for job in batch]
    finally:
        queue.close()
    assert len(ids) == len(batch) and ids == sorted(ids)
    copied, inserted = _rows(conn, ids), _rows(conn, one_by_one)
    assert [r[0] for r in copied] == ids
    for job, row, single in zip(batch, copied, inserted, strict=True):
        assert row[1] == job["payload"]
        assert row[2] == job.get("priority", pgq.job.DEFAULT_PRIORITY)
        assert row[3] == job.get("max_attempts", settings.max_attempts)
        timeout = job.get("timeout")
        assert (row[4] is None) if timeout is None else row[4] == pytest.approx(timeout, abs=1e-6)
        retry = job.get("retry")
        assert row[5:9] == ((None,) * 4 if retry is None else (retry.base, retry.factor, retry.max, retry.jitter))
        assert row[9] == pytest.approx(job.get("delay", 0.0), abs=1e-6)
        # The same job enqueued alone (INSERT path) is stored identically.
        assert row[1:9] == single[1:9]
        assert row[9] == pytest.approx(single[9], abs=1e-6)
