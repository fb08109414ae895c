"""Snapshots round-trip: restore at a random point in time equals the model's state then.

Hypothesis draws a history of changes to the jobs table (enqueue, change a
priority or payload, finish a job, delete one) with FULL / INCREMENTAL / AUTO
snapshots in between. The model is a dict of the jobs still to run, kept by the
test from the changes it made. Then, for a random point in time t, the state
restored into an empty second database must equal the model as it was at the
last snapshot taken at or before t (point in time = latest FULL at or before t
plus the INCREMENTALs up to t); and every stored snapshot must resolve to the
model at its own time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from pgq import snapshots
from pgq.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

texts = st.text(alphabet=st.sampled_from(["a", "é", "\\", "\t", "\n", "N", "."]), max_size=6)
operations = st.lists(st.one_of(
    st.tuples(st.just("enqueue"), st.integers(1, 5), texts, st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))),
    st.tuples(st.just("reprioritise"), st.integers(0, 10**6), st.integers(1, 5)),
    st.tuples(st.just("repayload"), st.integers(0, 10**6), texts),
    st.tuples(st.just("finish"), st.integers(0, 10**6), st.sampled_from(["completed", "cancelled", "dead"])),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("snapshot"), st.sampled_from(["FULL", "INCREMENTAL", "AUTO"])),
), min_size=1, max_size=30)

Model = dict[int, tuple[Any, ...]]  # id -> (payload, priority, status, unique_key)


@pytest.fixture
def other_db_url(clone_pool: Any, pg_server: Any) -> Iterator[str]:
    name = clone_pool.take()
    yield pg_server.url_for(name)
    clone_pool.give_back(name)


def _live(conn: psycopg.Connection[Any]) -> Model:
    rows = conn.execute("SELECT id, payload, priority, status::text, unique_key FROM pgq.jobs"
                        " WHERE status IN ('waiting', 'queued', 'running', 'retrying')").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _pick(model: Model, index: int) -> int | None:
    ids = sorted(model)
    return ids[index % len(ids)] if ids else None


def _apply(conn: psycopg.Connection[Any], model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "enqueue":
        _, priority, text, key = op
        if key is not None and any(v[3] == key for v in model.values()):
            key = None  # one live job per key: the model keeps the rule the table keeps
        row = conn.execute("INSERT INTO pgq.jobs (task, payload, priority, unique_key) VALUES ('t', %s, %s, %s)"
                           " RETURNING id", (Jsonb({"text": text}), priority, key)).fetchone()
        assert row is not None
        model[row[0]] = ({"text": text}, priority, "queued", key)
        return
    job = _pick(model, op[1])
    if job is None:
        return
    payload, priority, status, key = model[job]
    if kind == "reprioritise":
        conn.execute("UPDATE pgq.jobs SET priority = %s WHERE id = %s", (op[2], job))
        model[job] = (payload, op[2], status, key)
    elif kind == "repayload":
        conn.execute("UPDATE pgq.jobs SET payload = %s WHERE id = %s", (Jsonb({"text": op[2]}), job))
        model[job] = ({"text": op[2]}, priority, status, key)
    elif kind == "finish":
        conn.execute("UPDATE pgq.jobs SET status = %s::pgq.job_status, finished_at = now(),"
                     " attempts = CASE WHEN %s = 'dead' THEN max_attempts ELSE attempts END WHERE id = %s",
                     (op[2], op[2], job))
        del model[job]
    elif kind == "delete":
        conn.execute("DELETE FROM pgq.jobs WHERE id = %s", (job,))
        del model[job]


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations, where=st.floats(0, 1), pick=st.integers(0, 10**6))
def test_restore_at_a_random_point_in_time_equals_the_model_then(db_url, other_db_url, ops, where, pick):
    source, target = Settings(database_url=db_url), Settings(database_url=other_db_url)
    with psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(other_db_url, autocommit=True) as other:
        conn.execute("TRUNCATE pgq.state_snapshots, pgq.jobs CASCADE")
        other.execute("TRUNCATE pgq.jobs, pgq.workers CASCADE")
        model: Model = {}
        taken: list[tuple[snapshots.SnapshotInfo, Model]] = []
        for op in [*ops, ("snapshot", "AUTO")]:
            if op[0] != "snapshot":
                _apply(conn, model, op)
                continue
            kind = op[1] if taken or op[1] != "INCREMENTAL" else "FULL"
            taken.append((snapshots.create(source, kind=kind, full_every=4), dict(model)))

        for info, expected in taken:
            _, state = snapshots.load(source, info.id)
            assert sorted(int(k) for k in state.sections["jobs"]) == sorted(expected), info.kind
        k = pick % len(taken)
        start = taken[k][0].created_at
        end = taken[k + 1][0].created_at if k + 1 < len(taken) else start + dt.timedelta(seconds=1)
        at = start + (end - start) * where
        if at >= end:
            at = end - dt.timedelta(microseconds=1)

        snapshots.restore(target, at=at, source=source)

        assert _live(other) == taken[k][1]
