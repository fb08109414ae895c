"""The execution memory's writer against a real embedded Qdrant (local mode) and a real worker.

Nothing is mocked: jobs run with ``Worker.run_once()``, contexts go through the
worker's acknowledger hook into ``MemoryWriter``, and the tests call
``flush()`` instead of waiting for the writer thread. The writer's default sink
is a real child process (``PGQ_MEMORY_WRITER=process``); the tests that need to
reach into the store run the ``thread`` sink, whose code the child runs too.
What was stored is read back from the local store once the writer has closed it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

import pgq
from factories import eventually
from pgq.errors import ConfigurationError, ContextStoreMismatch, ContextStoreUnavailable
from pgq.executor import Failed
from pgq.memory.context import ExecutionContext
from pgq.memory.store import ContextStore
from pgq.memory.writer import FinishedAttempt, MemoryWriter, ProcessSink, StoreSink

pytestmark = [pytest.mark.integration, pytest.mark.search]


@pytest.fixture
def memory_settings(settings: pgq.Settings, tmp_path: Path) -> pgq.Settings:
    return settings.replace(memory=True, memory_path=str(tmp_path / "memory"), memory_flush_interval_seconds=3600)


@pytest.fixture
def q(memory_settings: pgq.Settings) -> Iterator[pgq.Queue]:
    queue = pgq.connect(settings=memory_settings)
    yield queue
    queue.close()


def worker_of(q: pgq.Queue) -> pgq.Worker:
    return q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)


def register(q: pgq.Queue) -> None:
    @q.task(name="send_email", max_attempts=3)
    def send_email(to: str, order: int) -> None:
        if order % 2:
            raise TimeoutError(f"SMTP timeout after 30s talking to mx{order}.mail.example.com")

    @q.task(name="ok")
    def ok(n: int) -> int:
        return n


def stored(settings: pgq.Settings) -> list[dict[str, Any]]:
    """Every stored context's payload (the writer must have closed the local store)."""
    store = ContextStore.open(settings, 384)
    try:
        points, _ = store.client.scroll(store.collection, limit=10_000, with_payload=True)
    finally:
        store.close()
    return sorted((dict(p.payload) for p in points), key=lambda p: (p["job_id"], p["attempt"]))


def job_status(q: pgq.Queue, job_id: int) -> str:
    return str(q.get(job_id).status.value)


def later(q: pgq.Queue, job_ids: list[int]) -> None:
    """Push these retries an hour away, so that the next run_once() claims only new jobs."""
    with q.pool.connection() as conn:
        conn.execute("UPDATE pgq.jobs SET run_at = now() + interval '1 hour' WHERE id = ANY(%s)", [job_ids])


def test_failed_attempts_become_contexts_with_payload_keys_only(q: pgq.Queue) -> None:
    register(q)
    failing = q.enqueue("send_email", {"to": "alice@example.org", "order": 7})
    passing = q.enqueue("send_email", {"to": "bob@example.org", "order": 8})
    worker = worker_of(q)
    assert worker.run_once() == 2
    assert worker.memory is not None and isinstance(worker.memory.sink, ProcessSink)
    assert worker.memory.flush() == 1
    worker.memory.close()
    [point] = stored(q.settings)
    assert point["job_id"] == failing and point["attempt"] == 1
    assert (point["task"], point["queue"], point["outcome"]) == ("send_email", "default", "failed")
    assert point["error_type"] == "TimeoutError"
    assert point["normalised"] == "smtp timeout after <num> talking to <host>"
    assert point["payload_keys"] == ["order", "to"] and point["payload"] is None
    assert point["worker_id"] == str(worker.id)
    assert point["duration_ms"] is not None and point["duration_ms"] >= 0
    assert any(frame.endswith(":send_email") for frame in point["frames"])
    assert job_status(q, passing) == "completed"


@pytest.mark.parametrize("where", ["process", "thread"])
def test_success_sample_and_payload_values_are_settings(memory_settings: pgq.Settings, where: str) -> None:
    settings = memory_settings.replace(memory_success_sample=1.0, memory_payload_values=True, memory_writer=where)
    with pgq.connect(settings=settings) as q:
        register(q)
        job = q.enqueue("ok", {"n": 5})
        worker = worker_of(q)
        worker.run_once()
        assert worker.memory is not None and worker.memory.flush() == 1
        worker.memory.close()
        [point] = stored(settings)
        assert (point["job_id"], point["outcome"], point["payload"]) == (job, "completed", {"n": 5})


def test_memory_off_means_no_writer(settings: pgq.Settings) -> None:
    with pgq.connect(settings=settings) as q:
        assert worker_of(q).memory is None


def break_store(writer: MemoryWriter) -> None:
    """Kill what stores the contexts: the child process (SIGKILL), or the embedded engine under the thread."""
    if isinstance(writer.sink, ProcessSink):
        assert writer.sink.process is not None
        os.kill(writer.sink.process.pid, signal.SIGKILL)
        writer.sink.process.wait()
    else:
        assert isinstance(writer.sink, StoreSink) and writer.sink.store is not None
        writer.sink.store.client.close()


@pytest.mark.parametrize("where", ["process", "thread"])
def test_a_store_broken_mid_run_drops_counts_and_recovers_while_jobs_never_notice(memory_settings: pgq.Settings,
                                                                                   where: str) -> None:
    settings = memory_settings.replace(memory_writer=where)
    with pgq.connect(settings=settings) as q:
        register(q)
        worker = worker_of(q)
        writer = worker.memory
        assert writer is not None
        first = [q.enqueue("send_email", {"to": "x", "order": 2 * i + 1}) for i in range(3)]
        worker.run_once()
        assert writer.flush() == 3
        later(q, first)
        break_store(writer)
        second = [q.enqueue("send_email", {"to": "x", "order": 2 * i + 101}) for i in range(4)]
        done = [q.enqueue("ok", {"n": i}) for i in range(3)]
        assert worker.run_once() == 7
        assert writer.flush() == 0
        assert writer.counters.dropped_unavailable == 4 and writer.counters.store_errors >= 1
        # The jobs did not notice: failures recorded as retries, completions completed.
        assert [job_status(q, j) for j in second] == ["retrying"] * 4
        assert [job_status(q, j) for j in done] == ["completed"] * 3
        assert worker.counters.errors == 0
        later(q, second)
        # Recovery: the writer reopens the store (or starts a new process) by itself once its pause is over.
        writer.retry_now()
        third = q.enqueue("send_email", {"to": "x", "order": 1001})
        worker.run_once()
        assert writer.flush() == 1
        assert writer.counters.reconnects == 1
        writer.close()
        assert {p["job_id"] for p in stored(settings)} == set(first) | {third}


def test_a_full_buffer_drops_and_counts_without_blocking(memory_settings: pgq.Settings) -> None:
    writer = MemoryWriter(memory_settings.replace(memory_buffer_size=2, memory_batch_size=100), "w")
    job = pgq.Job.__new__(pgq.Job)  # observe() only queues it; it is never read here
    for _ in range(5):
        writer.observe(job, Failed("E", "m"))
    assert writer.pending() == 2 and writer.counters.dropped_full == 3
    writer._stop.set()


def test_retention_deletes_contexts_older_than_the_setting(q: pgq.Queue, memory_settings: pgq.Settings) -> None:
    register(q)
    now = [1_700_000_000.0]
    writer = MemoryWriter(memory_settings, "w", wall=lambda: now[0])
    worker = worker_of(q)
    worker.memory = writer
    worker._acknowledger._observe = writer.observe
    old = q.enqueue("send_email", {"to": "x", "order": 1})
    worker.run_once()
    assert writer.flush() == 1
    later(q, [old])
    # Retention runs at most hourly: the clock moves past the retention and that hour.
    now[0] += memory_settings.memory_retention_seconds + 3600
    young = q.enqueue("send_email", {"to": "x", "order": 3})
    worker.run_once()
    assert writer.flush() == 1
    writer.close()
    assert [p["job_id"] for p in stored(memory_settings)] == [young]
    assert old != young


def test_a_collection_of_another_dimension_is_a_typed_error_naming_both(memory_settings: pgq.Settings) -> None:
    client = QdrantClient(path=memory_settings.memory_location())
    client.create_collection(memory_settings.memory_collection,
                             vectors_config=models.VectorParams(size=128, distance=models.Distance.COSINE))
    client.close()
    with pytest.raises(ContextStoreMismatch, match=r"size 128.*writes 384"):
        ContextStore.open(memory_settings, 384)
    # The mismatch left the directory free and the collection as it was.
    client = QdrantClient(path=memory_settings.memory_location())
    assert client.get_collection(memory_settings.memory_collection).config.params.vectors.size == 128
    client.close()


def test_an_unreachable_qdrant_is_a_typed_error_naming_it(memory_settings: pgq.Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ContextStoreUnavailable, match=f"127.0.0.1:{port}"):
        ContextStore.open(memory_settings.replace(qdrant_url=f"http://127.0.0.1:{port}"), 384)


def test_a_local_store_held_by_another_client_is_a_typed_error(memory_settings: pgq.Settings) -> None:
    holder = ContextStore.open(memory_settings, 384)
    try:
        with pytest.raises(ContextStoreUnavailable, match="PGQ_QDRANT_URL"):
            ContextStore.open(memory_settings, 384)
    finally:
        holder.close()


def test_upsert_is_idempotent_per_attempt(memory_settings: pgq.Settings) -> None:
    store = ContextStore.open(memory_settings, 384)
    c = ExecutionContext(job_id=1, attempt=1, queue="q", task="t", outcome="failed", finished_at=5.0, message="x")
    vector = np.ones((1, 384), dtype=np.float32) / np.sqrt(384)
    store.upsert([c], vector)
    store.upsert([c], vector)
    assert store.count() == 1
    store.close()


@pytest.mark.parametrize("where", ["process", "thread"])
def test_killing_the_store_under_a_running_worker_is_never_noticed_by_jobs(memory_settings: pgq.Settings,
                                                                           where: str) -> None:
    """A worker runs 300 jobs (a third fail) in its own thread; the writer's store is killed
    once some contexts are stored (its process gets SIGKILL; or, in the thread, the embedded
    engine is closed). Every job still ends as its handler said, no outcome write fails,
    and every context the writer was given is stored or counted as dropped."""
    settings = memory_settings.replace(memory_batch_size=5, memory_flush_interval_seconds=0.01, memory_writer=where)
    with pgq.connect(settings=settings) as q:
        release = threading.Event()

        @q.task(name="maybe", max_attempts=1)
        def maybe(n: int) -> int:
            if n >= 30:
                release.wait(30)  # the later jobs wait until the store was killed
            if n % 3 == 0:
                raise ConnectionResetError(f"peer {n} reset the connection")
            return n

        ids = q.enqueue_many([q.job_spec("maybe", {"n": n}) for n in range(300)])
        worker = q.worker(queues=["default"], concurrency=4, install_signal_handlers=False, run_maintenance=False)
        writer = worker.memory
        assert writer is not None
        kill = threading.Event()

        class KillableStore(ContextStore):
            """A real local store whose engine is closed, in the writer's thread, once ``kill`` is set."""

            def upsert(self, contexts: Any, vectors: Any) -> None:
                if kill.is_set() and not getattr(KillableStore, "killed", False):
                    KillableStore.killed = True  # type: ignore[attr-defined]
                    self.client.close()
                super().upsert(contexts, vectors)

        if isinstance(writer.sink, StoreSink):
            writer.sink._open_store = KillableStore.open  # opened lazily, at the first write
        errors: list[BaseException] = []

        def run() -> None:
            try:
                worker.run(burst=True)
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # The first contexts wait for the writer's process to start: imports, seconds on a busy machine.
        eventually(lambda: writer.counters.stored >= 5, "some contexts stored", timeout=120)
        if isinstance(writer.sink, ProcessSink):
            break_store(writer)
        kill.set()  # in the thread: the embedded engine dies under the writer, at its next write
        release.set()
        thread.join(60)
        assert not thread.is_alive() and errors == []
        with q.pool.connection() as conn:
            rows = dict(conn.execute("SELECT status::text, count(*) FROM pgq.jobs WHERE id = ANY(%s) GROUP BY 1",
                                     [list(ids)]).fetchall())
        assert rows == {"completed": 200, "dead": 100}
        assert worker.counters.errors == 0
        c = writer.counters
        assert c.observed == 100 and c.store_errors >= 1
        assert c.stored >= 5 and c.dropped_unavailable >= 1
        assert c.stored + c.dropped_unavailable + c.dropped_full == c.observed


def test_the_local_store_writes_ahead_so_that_commits_do_not_wait_for_fsync(memory_settings: pgq.Settings) -> None:
    import sqlite3
    from contextlib import closing

    store = ContextStore.open(memory_settings, 384)
    store.close()
    [storage] = Path(memory_settings.memory_location()).rglob("storage.sqlite")
    with closing(sqlite3.connect(storage)) as conn:  # WAL mode is a property of the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def batch_of(n: int, first_job: int = 1) -> tuple[list[ExecutionContext], np.ndarray]:
    contexts = [ExecutionContext(job_id=first_job + i, attempt=1, queue="q", task="t", outcome="failed",
                                 finished_at=5.0 + i, message=f"error {i}") for i in range(n)]
    return contexts, np.ones((n, 384), dtype=np.float32) / np.sqrt(384)


def test_a_batch_is_one_sqlite_transaction_in_the_local_store(memory_settings: pgq.Settings) -> None:
    """qdrant-client's local mode commits each point on its own; the store writes a batch as one."""
    store = ContextStore.open(memory_settings, 384)
    statements: list[str] = []
    store.persistence.storage.set_trace_callback(statements.append)
    store.upsert(*batch_of(40))
    store.persistence.storage.set_trace_callback(None)
    store.close()
    assert sum(1 for s in statements if s.startswith("INSERT")) == 40
    assert sum(1 for s in statements if s.strip().upper() == "COMMIT") == 1, statements
    reopened = ContextStore.open(memory_settings, 384)
    assert reopened.count() == 40
    reopened.close()


def test_a_batch_that_fails_midway_leaves_none_of_its_points_in_the_file(memory_settings: pgq.Settings) -> None:
    store = ContextStore.open(memory_settings, 384)
    store.upsert(*batch_of(5))
    inserts = 0

    def count(statement: str) -> None:
        nonlocal inserts
        inserts += statement.startswith("INSERT")

    # SQLite aborts the statement that runs while the progress handler says so: the 11th INSERT.
    connection = store.persistence.storage
    connection.set_trace_callback(count)
    connection.set_progress_handler(lambda: int(inserts >= 11), 1)
    with pytest.raises(ContextStoreUnavailable, match="could not write contexts"):
        store.upsert(*batch_of(30, first_job=100))
    connection.set_progress_handler(None, 1)
    connection.set_trace_callback(None)
    assert inserts == 11
    store.close()
    reopened = ContextStore.open(memory_settings, 384)  # what the file holds: the first batch alone
    assert reopened.count() == 5
    reopened.close()


def test_a_clean_stop_writes_every_pending_context_before_the_worker_returns(memory_settings: pgq.Settings) -> None:
    """60 failures, batches of 7, and a flush interval of an hour: most contexts are still in
    the buffer (or in the last partial batch) when the burn-down ends. ``run(burst=True)``
    returns only once every one is in the store and the writer's process has ended."""
    settings = memory_settings.replace(memory_batch_size=7)
    with pgq.connect(settings=settings) as q:
        @q.task(name="boom", max_attempts=1)
        def boom(n: int) -> None:
            raise ConnectionResetError(f"peer 10.0.0.{n} reset the connection")

        ids = q.enqueue_many([q.job_spec("boom", {"n": n}) for n in range(60)])
        worker = q.worker(queues=["default"], concurrency=4, install_signal_handlers=False, run_maintenance=False)
        writer = worker.memory
        assert writer is not None and isinstance(writer.sink, ProcessSink)
        worker.run(burst=True)
        assert writer.pending() == 0 and writer.sink.process is None
        c = writer.counters
        assert (c.observed, c.stored, c.dropped_full, c.dropped_unavailable, c.store_errors) == (60, 60, 0, 0, 0)
    assert [(p["job_id"], p["attempt"]) for p in stored(settings)] == [(j, 1) for j in sorted(ids)]


def test_a_job_the_writer_cannot_read_is_dropped_alone_and_counted(q: pgq.Queue) -> None:
    register(q)
    worker = worker_of(q)
    writer = worker.memory
    assert writer is not None
    writer.observe(None, Failed("E", "m"))  # type: ignore[arg-type]  # not a job: observe never reads it
    job = q.enqueue("send_email", {"to": "x", "order": 5})
    worker.run_once()
    assert writer.flush() == 1  # the same batch: the readable one is stored
    c = writer.counters
    assert (c.observed, c.stored, c.dropped_unavailable, c.store_errors) == (2, 1, 1, 0)
    assert c.last_error is not None and "unreadable job" in c.last_error
    writer.close()
    assert [p["job_id"] for p in stored(q.settings)] == [job]


def test_a_search_vector_of_another_size_is_a_typed_error(memory_settings: pgq.Settings) -> None:
    store = ContextStore.open(memory_settings, 384)
    try:
        c = ExecutionContext(job_id=1, attempt=1, queue="q", task="t", outcome="failed", finished_at=5.0, message="x")
        store.upsert([c], np.ones((1, 384), dtype=np.float32))
        with pytest.raises(ContextStoreMismatch, match="384"):
            store.search(np.ones(128, dtype=np.float32), 5)
        assert [h.context.job_id for h in store.search(np.ones(384, dtype=np.float32), 5)] == [1]
    finally:
        store.close()


def test_minilm_without_its_package_is_refused_when_the_writer_is_made(memory_settings: pgq.Settings) -> None:
    """The writer's process would make the embedder; the worker checks it can, at start, without loading it."""
    with pytest.raises(ConfigurationError, match="PGQ_MEMORY_EMBEDDER=minilm"):
        MemoryWriter(memory_settings.replace(memory_embedder="minilm"), "w")


def test_the_writers_process_outlives_no_worker_and_keeps_what_it_was_given(memory_settings: pgq.Settings) -> None:
    """A worker killed with SIGKILL closes its end of the pipe and never says stop: its child
    writes the batch it has, closes the local store (free for the next worker) and exits."""
    sink = ProcessSink(memory_settings, "w")
    attempt = FinishedAttempt(7, 1, "default", "send_email", "failed", 1.7e9, 1.7e9 - 0.5, "TimeoutError",
                              "SMTP timeout after 30s", None, ("to",), None)
    assert sink.write([attempt], 1.7e9).stored == 1
    process = sink.process
    assert process is not None and process.stdin is not None and process.stdout is not None
    process.stdin.close()  # what the kernel does for a killed worker
    assert process.wait(60) == 0
    process.stdout.close()
    [point] = stored(memory_settings)  # the directory is free again
    assert (point["job_id"], point["normalised"], point["duration_ms"]) == (7, "smtp timeout after <num>", 500.0)


def test_the_writers_process_ignores_the_signals_a_process_group_gets(memory_settings: pgq.Settings) -> None:
    """Ctrl-C (SIGINT) or a supervisor's SIGTERM reaches the whole process group: the child
    keeps serving so that the worker's last flush, which follows, is written."""
    sink = ProcessSink(memory_settings, "w")
    attempts = [FinishedAttempt(n, 1, "default", "t", "failed", 1.7e9 + n, None, "E", f"boom {n}", None, (), None)
                for n in (1, 2)]
    assert sink.write(attempts[:1], 1.7e9).stored == 1
    assert sink.process is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        os.kill(sink.process.pid, sig)
    assert sink.write(attempts[1:], 1.7e9).stored == 1
    process = sink.process
    sink.close()
    assert process.returncode == 0
    assert [p["job_id"] for p in stored(memory_settings)] == [1, 2]
