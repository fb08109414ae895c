"""Search and DLQ clusters end to end: real worker, real Postgres, real embedded Qdrant.

Jobs fail for two root causes (an SMTP timeout, a missing file) with varying
hosts, ids and paths; some recover (a retry succeeds, a requeue completes),
some stay dead. ``similar`` must find the same failure and say how it ended;
``dlq clusters`` must group the dead by cause; ``--cluster`` requeues one group.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import pgq
from pgq.cli import main
from pgq.errors import ConfigurationError, JobNotFound, ValidationError
from pgq.memory.clusters import dlq_clusters, requeue_cluster
from pgq.memory.search import Memory

pytestmark = [pytest.mark.integration, pytest.mark.search]


class World:
    """The queue, its worker and the jobs of the scenario, by role."""

    def __init__(self, q: pgq.Queue, conn: psycopg.Connection[Any]) -> None:
        self.q = q
        self.conn = conn
        self.fixed: set[int] = set()

        @q.task(name="send_email", max_attempts=2)
        def send_email(mx: int, flaky: bool) -> None:
            if flaky and pgq.current_job().job.attempts > 1:
                return
            raise TimeoutError(f"SMTP timeout after {mx}s talking to mx{mx}.mail.example.com")

        @q.task(name="import_csv", max_attempts=2)
        def import_csv(batch: int) -> None:
            if batch in self.fixed:
                return
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '/data/in/{batch}/batch_{batch * 7}.csv'")

        self.worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)

    def run_all(self) -> None:
        """Run until nothing is due, making retries due at once."""
        while True:
            self.conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE status = 'retrying'")
            if self.worker.run_once() == 0:
                return


@pytest.fixture
def world(settings: pgq.Settings, tmp_path: Path, conn: psycopg.Connection[Any]) -> Iterator[World]:
    s = settings.replace(memory=True, memory_path=str(tmp_path / "memory"), memory_flush_interval_seconds=3600)
    with pgq.connect(settings=s) as q:
        w = World(q, conn)
        w.retried = q.enqueue("send_email", {"mx": 3, "flaky": True})
        w.smtp_dead = q.enqueue("send_email", {"mx": 17, "flaky": False})
        w.file_dead = q.enqueue("import_csv", {"batch": 41})
        w.file_requeued = q.enqueue("import_csv", {"batch": 42})
        w.file_dead_too = q.enqueue("import_csv", {"batch": 43})
        w.run_all()
        w.fixed.add(42)
        q.requeue_dead([w.file_requeued])
        w.run_all()
        assert w.worker.memory is not None
        w.worker.memory.close()  # frees the local store for the searches below
        yield w


def status(w: World, job_id: int) -> str:
    return str(w.q.get(job_id).status.value)


def test_the_scenario_ends_as_intended(world: World) -> None:
    assert [status(world, j) for j in (world.retried, world.smtp_dead, world.file_dead, world.file_requeued,
                                       world.file_dead_too)] == ["completed", "dead", "dead", "completed", "dead"]


def test_similar_finds_the_same_failure_and_says_how_it_ended(world: World) -> None:
    with Memory(world.q) as memory:
        found = memory.similar(world.smtp_dead, k=3)
        assert found[0].job_id == world.retried
        assert (found[0].ended, found[0].error_type) == ("retry succeeded", "TimeoutError")
        assert world.smtp_dead not in {s.job_id for s in found}
        # Each of the two other file jobs failed twice (max_attempts=2): four executions.
        near_file = memory.similar(world.file_dead, k=5)
        assert [s.job_id for s in near_file[:4]].count(world.file_requeued) == 2
        assert [s.job_id for s in near_file[:4]].count(world.file_dead_too) == 2
        ends = {s.job_id: s.ended for s in near_file}
        assert ends[world.file_requeued] == "requeued, then completed"
        assert ends[world.file_dead_too] == "dead"
        assert near_file[0].score > found[-1].score


def test_queue_similar_delegates_to_the_memory(world: World) -> None:
    [first] = world.q.similar(world.smtp_dead, k=1)
    assert (first.job_id, first.ended) == (world.retried, "retry succeeded")


def test_similar_text_reads_a_pasted_error(world: World) -> None:
    with Memory(world.q) as memory:
        found = memory.similar_text("FileNotFoundError: [Errno 2] No such file or directory: '/mnt/x/batch_9.csv'", k=2)
    assert {s.job_id for s in found} <= {world.file_dead, world.file_requeued, world.file_dead_too}
    assert all(s.error_type == "FileNotFoundError" for s in found)


def test_similar_rejects_bad_input_and_unknown_jobs(world: World, settings: pgq.Settings) -> None:
    with Memory(world.q) as memory:
        for bad in (0, -1, True, "7"):
            with pytest.raises(ValidationError):
                memory.similar(bad)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            memory.similar(world.smtp_dead, k=0)
        with pytest.raises(ValidationError):
            memory.similar_text("  ")
        with pytest.raises(JobNotFound):
            memory.similar(10**9)
    with pgq.connect(settings=settings) as q, pytest.raises(ConfigurationError, match="PGQ_MEMORY"):
        Memory(q)


def test_dlq_clusters_group_dead_jobs_by_cause(world: World) -> None:
    clusters = dlq_clusters(world.q)
    assert [(c.count, sorted(c.job_ids)) for c in clusters] == [
        (2, sorted([world.file_dead, world.file_dead_too])), (1, [world.smtp_dead])]
    files = clusters[0]
    # Its id is the job that died first (the one that started it).
    first = world.conn.execute("SELECT job_id FROM pgq.dead_letter_queue WHERE job_id = ANY(%s)"
                               " ORDER BY moved_at, id LIMIT 1", [list(files.job_ids)]).fetchone()
    assert first is not None and files.id == first[0] and files.tasks == ("import_csv",)
    assert files.error_type == "FileNotFoundError" and "No such file" in files.representative
    assert files.first_seen <= files.last_seen


def test_requeue_cluster_requeues_exactly_that_cluster(world: World) -> None:
    [files, smtp] = dlq_clusters(world.q)
    assert sorted(requeue_cluster(world.q, files.id)) == sorted(files.job_ids)
    assert [status(world, j) for j in files.job_ids] == ["queued", "queued"]
    assert status(world, world.smtp_dead) == "dead"
    with pytest.raises(ValidationError, match="no dead letter cluster"):
        requeue_cluster(world.q, files.id)
    assert smtp.count == 1


def test_cli_similar_clusters_and_requeue(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQ_DATABASE_URL", str(world.q.settings.database_url))
    monkeypatch.setenv("PGQ_MEMORY", "true")
    monkeypatch.setenv("PGQ_MEMORY_PATH", str(world.q.settings.memory_path))
    runner = CliRunner()
    shown = runner.invoke(main, ["similar", str(world.smtp_dead), "-k", "2"])
    assert shown.exit_code == 0, shown.output
    assert str(world.retried) in shown.output and "retry succeeded" in shown.output
    as_json = json.loads(runner.invoke(main, ["similar", "--text", "SMTP timeout after 9s talking to mx1.example.com",
                                              "--json"]).output)
    assert as_json[0]["error_type"] == "TimeoutError"
    usage = runner.invoke(main, ["similar", "5", "--text", "x"])
    assert usage.exit_code == 2
    listed = json.loads(runner.invoke(main, ["dlq", "clusters", "--json"]).output)
    assert [c["count"] for c in listed] == [2, 1]
    table = runner.invoke(main, ["dlq", "clusters"]).output
    assert "FileNotFoundError" in table and "representative message" in table
    requeued = runner.invoke(main, ["dlq", "requeue", "--cluster", str(listed[1]["id"])])
    assert requeued.exit_code == 0 and "requeued 1 job(s)" in requeued.output
    assert status(world, world.smtp_dead) == "queued"
    both = runner.invoke(main, ["dlq", "requeue", "--cluster", "1", "--all"])
    assert both.exit_code == 2
