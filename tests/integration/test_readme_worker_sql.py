"""The README's "worker in any language" example, run as written.

The statements are read from README.md (the SQL block after the marker
comment) and executed one by one against a database holding the jobs the
text says it claims (101, 102 and 103 of queue ``emails``). Issue 9,
defect 8: the example used to heartbeat without the running job ids, which
rescues every job held for more than 10 s.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import factories

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- README example: worker in any language"
WORKER = uuid.UUID("6f1c9a2e-5b1d-4c3e-9f00-0123456789ab")


def example_statements() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("```sql\n", text.index(MARKER)) + len("```sql\n")
    block = text[start:text.index("```", start)]
    # A statement ends with ";" at the end of a line, maybe followed by a comment.
    return [s.strip() for s in re.split(r";[ \t]*(?:--[^\n]*)?\n", block) if s.strip()]


def insert_example_jobs(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO pgq.jobs (id, task, queue, payload) VALUES"
                 " (101, 'mail.send', 'emails', '{\"to\": \"a@b.c\"}'),"
                 " (102, 'mail.send', 'emails', '{\"to\": \"d@e.f\"}'),"
                 " (103, 'mail.send', 'emails', '{\"to\": \"g@h.i\"}')")


def test_the_worker_example_runs_as_written_and_does_what_it_says(conn: psycopg.Connection[Any]) -> None:
    statements = example_statements()
    insert_example_jobs(conn)

    answers = [conn.execute(statement).fetchall() for statement in statements]

    called = [re.findall(r"\b(pgq\.\w+)\(", re.sub(r"--[^\n]*", "", s)) for s in statements]
    assert called == [[name] for name in [
        "pgq.register_worker", "pgq.get_runnable_jobs_v2", "pgq.complete_jobs", "pgq.heartbeat_worker_v2",
        "pgq.fail_job", "pgq.deregister_worker"]]
    register, claim, complete, beat, fail, deregister = answers
    assert [(r[0], r[3], r[4]) for r in claim] == [(101, 1, 1), (102, 1, 2), (103, 1, 3)]
    assert sorted(complete) == [(101,), (102,)]
    assert beat == [("active", "active", [], [])]  # nothing lost, nothing rescued
    assert fail == [(True,)] and deregister == [(0,)]
    assert factories.statuses(conn, [101, 102, 103]) == {101: "completed", 102: "completed", 103: "retrying"}
    w = factories.worker(conn, WORKER)
    assert (w["status"], w["started_through"]) == ("stopped", 3)


def test_the_heartbeat_of_the_example_keeps_a_long_job_that_a_bare_heartbeat_would_lose(
    conn: psycopg.Connection[Any],
) -> None:
    statements = example_statements()
    register, claim, complete, beat = statements[:4]
    insert_example_jobs(conn)
    for statement in (register, claim, complete):
        conn.execute(statement)
    later = factories.db_now(conn) + dt.timedelta(seconds=30)  # job 103 has run for 30 s

    # The example's heartbeat, 30 s on: job 103 is listed, so it stays.
    listed = conn.execute(beat.replace(", 3)", ", 3, NULL, %s)"), (later,)).fetchall()
    # The old example's heartbeat (no running ids) on the same worker: it says what it took.
    bare = conn.execute("SELECT status::text, rescued_job_ids FROM pgq.heartbeat_worker_v2(%s, 0, '{}', 3,"
                        " NULL, %s)", (WORKER, later)).fetchall()

    assert listed == [("active", "active", [], [])]
    assert bare == [("active", [103])]
    assert factories.statuses(conn, [101, 102, 103]) == {101: "completed", 102: "completed", 103: "retrying"}
