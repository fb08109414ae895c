"""``pgq.schema`` is public API: the README's SQLAlchemy example runs as written.

The example is read from the README and run against a test database (only its
URL is replaced); its results are compared with jobs made here through the
public API. That ``pgq.schema`` matches the migrated tables is checked in
``test_migrations.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgq

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Querying the tables with SQLAlchemy", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README section has no python example"
    return match.group(1)


def test_the_readme_sqlalchemy_example_runs_and_reads_the_queue(
        settings: pgq.Settings, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with pgq.Queue(settings, strict_tasks=False) as q:
        emails = q.enqueue_many([{"task": "send", "queue": "emails"} for _ in range(3)])
        q.enqueue("report")
    # One email job dies (fatally, on its first attempt), as a worker's fail_job would record it.
    worker = "00000000-0000-0000-0000-000000000009"
    conn.execute("SELECT pgq.register_worker(%s, 'h', 1, '{emails}', 1)", (worker,))
    claimed = conn.execute("SELECT id FROM pgq.get_runnable_jobs('{emails}', %s, 1)", (worker,)).fetchall()
    assert claimed == [(emails[0],)]
    conn.execute("SELECT pgq.fail_job(%s, %s, 1, 'Boom', 'no', p_fatal => true)", (emails[0], worker))

    code = readme_example()
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code, as written
    namespace["engine"].dispose()

    assert namespace["by_status"] == {("default", "queued"): 1, ("emails", "dead"): 1, ("emails", "queued"): 2}
    assert [tuple(r) for r in namespace["dead_letters"]] == [(emails[0], "fatal", 1)]
