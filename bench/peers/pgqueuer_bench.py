"""pgq's bench workloads run through pgqueuer (1.x), configured for throughput as its docs advise.

Runs inside the peers' virtualenv (see README.md); never imports pgq. One
workload per run, in a database of its own (``pgq_peer_pgqueuer``, created,
installed with ``Queries.install()`` and dropped); prints one JSON object on
stdout. Configuration, from pgqueuer's performance-tuning guide and its own
benchmark tool:

- worker: ``PgQueuer`` (a ``QueueManager``) on an asyncpg connection pool
  (``PgQueuer.from_asyncpg_pool``, ``min_size=5, max_size=20``: the guide's
  "Connection Pooling" section recommends a pool driver for high-throughput
  deployments, with its own example sizes; the LISTEN connection is one of the
  pool's, the dequeues and acknowledgements borrow others) under uvloop as
  ``pgq run`` does (``driver=connection``: the one dedicated connection of
  earlier runs), ``batch_size=100`` (the guide:
  raise it for short jobs), ``max_concurrent_tasks`` unset (it is a safety cap
  and must be at least twice the batch size), async handlers;
- ``optimize_autovacuum()`` after install (``pgq autovac`` in the checklist);
  durability ``durable`` (the default; ``balanced``/``volatile`` use UNLOGGED
  tables and lose data on a crash, pgq does not offer that);
- burn-down workers run in ``drain`` mode (exit once the queue is empty).

Direct use:  python pgqueuer_bench.py throughput --url postgresql://postgres@127.0.0.1/postgres \
                 --set jobs=20000 --set workers=2 --set progress=true
"""

from __future__ import annotations

import asyncio
import importlib.metadata as metadata
import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import psycopg

import _peer_common as common

PEER = "pgqueuer"
DEFAULTS: dict[str, Any] = {
    **common.COMMON_DEFAULTS,
    "batch_size": 100,             # jobs per dequeue round trip (default 10)
    "max_concurrent_tasks": None,  # per-process cap on picked jobs; None = unlimited (the default)
    "dequeue_timeout_s": 30.0,     # polling fallback when no NOTIFY arrives (default)
    "durability": "durable",       # durable | balanced | volatile
    "autovac": True,               # apply pgqueuer's recommended autovacuum settings
    "uvloop": True,                # as `pgq run` does
    "driver": "pool",              # pool (the guide, for high throughput) | connection (one dedicated)
    "pool_min_size": 5,            # the guide's example pool
    "pool_max_size": 20,
}


# ---------------------------------------------------------------- configuration
def prepare(settings: dict[str, Any]) -> None:
    # pgqueuer reads its object names and durability from PGQUEUER_* variables:
    # start from its defaults, whatever the caller's environment holds.
    for key in [k for k in os.environ if k.upper().startswith("PGQUEUER_")]:
        del os.environ[key]
    os.environ["PGQUEUER_DURABILITY"] = str(settings["durability"])


def describe(workload: str, s: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    versions = {p: metadata.version(p) for p in ("pgqueuer", "asyncpg", "uvloop", "psycopg")}
    versions["python"] = sys.version.split()[0]
    config: dict[str, Any] = {
        "driver": (f"asyncpg: PgQueuer.from_asyncpg_pool, a pool of {s['pool_min_size']}-{s['pool_max_size']} "
                   "connections per worker process (docs, Performance Tuning > Connection Pooling: a pool "
                   "driver for high-throughput deployments)" if s["driver"] == "pool" else
                   "asyncpg: PgQueuer.from_asyncpg_connection, one dedicated connection per worker process"),
        "event_loop": "uvloop" if s["uvloop"] else "asyncio",
        "schema": "Queries.install() into a fresh database"
                  + ("; Queries.optimize_autovacuum() (= `pgq autovac`)" if s["autovac"] else ""),
        "durability": s["durability"],
        "enqueue_single": "Queries.enqueue(entrypoint, payload) on an autocommit asyncpg connection "
                          "(one INSERT, one commit, one NOTIFY per job)",
        "enqueue_bulk": f"Queries.enqueue(list, list, list): {s['bulk_chunk']} jobs per call (one statement)",
    }
    if workload in ("throughput", "latency"):
        config.update({
            "worker": f"PgQueuer.from_asyncpg_{s['driver']}(...).run(...) in each worker process",
            "worker_processes": s["workers"],
            "analyze_after_preload": bool(s["analyze"]) if workload == "throughput" else None,
            "batch_size": s["batch_size"],
            "max_concurrent_tasks": s["max_concurrent_tasks"],
            "concurrency": "not a pgqueuer knob: every dequeued job runs as its own asyncio task "
                           "(bounded only by max_concurrent_tasks); the 'concurrency' setting is unused",
            "dequeue_timeout_s": s["dequeue_timeout_s"],
            "mode": "drain" if workload == "throughput" else "continuous",
            "listen_notify": "always on: a row trigger on the queue table NOTIFYs the worker",
            "completion": "JobStatusLogBuffer: DELETE from the queue + INSERT into pgqueuer_log, "
                          "batch_size jobs per statement (or on a timer)",
            "heartbeat_timeout_s": 30.0,
            "log_aggregation_interval_s": 30.0,
            "handler": "async def, returns at once (entrypoint 'noop'; 'stamp' for latency)",
        })
    return versions, config


# ---------------------------------------------------------------- producer side
async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(url)


async def _enqueue_many(url: str, total: int, chunk: int) -> float:
    """Bulk-enqueue ``total`` no-op jobs; return the seconds it took."""
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await _connect(url)
    try:
        q = Queries(AsyncpgDriver(conn))
        t = time.perf_counter()
        for start in range(0, total, chunk):
            k = min(chunk, total - start)
            await q.enqueue(["noop"] * k, [None] * k, [0] * k)
        return time.perf_counter() - t
    finally:
        await conn.close()


async def _install(url: str, s: dict[str, Any]) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await _connect(url)
    try:
        q = Queries(AsyncpgDriver(conn))
        await q.install()
        if s["autovac"]:
            await q.optimize_autovacuum()
    finally:
        await conn.close()


def _run(coro: Any, s: dict[str, Any]) -> Any:
    if s["uvloop"]:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# ---------------------------------------------------------------- worker process
def worker_main(shared: common.Shared, url: str, s: dict[str, Any], drain: bool) -> None:
    _run(_worker(shared, url, s, drain), s)


async def _worker(shared: common.Shared, url: str, s: dict[str, Any], drain: bool) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    if s["driver"] == "pool":
        import asyncpg

        conn = await asyncpg.create_pool(url, min_size=s["pool_min_size"], max_size=s["pool_max_size"])
        pgq = PgQueuer.from_asyncpg_pool(conn)
    elif s["driver"] == "connection":
        conn = await _connect(url)
        pgq = PgQueuer.from_asyncpg_connection(conn)
    else:
        raise ValueError(f"driver must be 'pool' or 'connection', got {s['driver']!r}")

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        shared.count()

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        started = time.time()
        assert job.payload is not None
        shared.results.put((int(job.id), (started - float(job.payload.decode())) * 1000.0))
        shared.count()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    shared.ready.set()
    shared.go.wait()  # nothing else runs on this loop yet
    await pgq.run(
        batch_size=s["batch_size"],
        max_concurrent_tasks=s["max_concurrent_tasks"],
        dequeue_timeout=timedelta(seconds=s["dequeue_timeout_s"]),
        mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
    )
    if s["driver"] == "pool" or not conn.is_closed():
        await conn.close()


# ---------------------------------------------------------------- workloads
def enqueue(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    _run(_install(url, s), s)

    async def singles() -> float:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await _connect(url)
        try:
            q = Queries(AsyncpgDriver(conn))
            t = time.perf_counter()
            for _ in range(s["single_jobs"]):
                await q.enqueue("noop", None)
            return time.perf_counter() - t
        finally:
            await conn.close()

    single_s = _run(singles(), s) if s["single_jobs"] else 0.0
    bulk_s = _run(_enqueue_many(url, s["bulk_jobs"], s["bulk_chunk"]), s) if s["bulk_jobs"] else 0.0
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()[0]  # type: ignore[index]
    expected = s["single_jobs"] + s["bulk_jobs"]
    if stored != expected:
        raise RuntimeError(f"enqueued {expected} jobs but the queue table holds {stored}")
    return {
        "enqueue_single_jobs": s["single_jobs"],
        "enqueue_single_jobs_per_s": round(s["single_jobs"] / single_s, 1) if single_s else None,
        "enqueue_bulk_jobs": s["bulk_jobs"],
        "enqueue_bulk_jobs_per_s": round(s["bulk_jobs"] / bulk_s, 1) if bulk_s else None,
        "stored": stored,
    }


def throughput(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    n = s["jobs"]
    _run(_install(url, s), s)
    common.log(s, f"pgqueuer: pre-loading {n} jobs")
    _run(_enqueue_many(url, n, s["bulk_chunk"]), s)
    if s["analyze"]:
        common.analyze(url)

    with common.WorkerGroup(s["workers"], worker_main, url, s, True) as group:
        group.start()
        meter = common.CostMeter(admin, s["database"])
        t0 = group.release()
        group.join(s["timeout_s"], total=n, label="pgqueuer burn-down", progress=s["progress"])
        elapsed = time.perf_counter() - t0
        cost = meter.finish(n, url)

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'").fetchone()
        left = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()[0]  # type: ignore[index]
    assert row is not None
    successful, distinct = int(row[0]), int(row[1])
    handled = group.handled()
    if distinct != n or left:
        raise RuntimeError(f"pgqueuer burn-down incomplete: {distinct} of {n} jobs logged successful, "
                           f"{left} left in the queue, {handled} handler calls")
    return {
        "jobs": n,
        "process_jobs_per_s": round(n / elapsed, 1),
        "process_seconds": round(elapsed, 3),
        "completed": distinct,
        "handler_calls": handled,
        "lost_or_duplicated": (n - distinct) + (successful - distinct) + abs(handled - n),
        "pg_cost": cost,
    }


def latency(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    count = s["latency_jobs"]
    _run(_install(url, s), s)

    async def produce() -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await _connect(url)
        try:
            q = Queries(AsyncpgDriver(conn))
            for i in range(count):
                t0 = time.time()  # just before the enqueue call, like pgq's bench
                await q.enqueue("stamp", repr(t0).encode())
                await asyncio.sleep(s["interval_ms"] / 1000.0)  # a paced producer: workers are idle
                if s["progress"] and (i + 1) % 50 == 0:
                    common.log(s, f"pgqueuer latency: {i + 1}/{count} enqueued")
        finally:
            await conn.close()

    with common.WorkerGroup(s["workers"], worker_main, url, s, False) as group:
        group.start()
        group.release()
        time.sleep(s["settle_s"])
        _run(produce(), s)
        items = common.collect(group.results, count, timeout=30.0)
        group.stop()  # SIGTERM: the peer's graceful shutdown
    if len(items) != count:
        raise RuntimeError(f"pgqueuer latency: {len(items)} of {count} jobs picked up within 30 s")
    return {
        "latency_jobs": count,
        "pickup_latency_ms": common.percentiles([ms for _, ms in items]),
        "picked_up": len({job_id for job_id, _ in items}),
    }


if __name__ == "__main__":
    raise SystemExit(common.main(PEER, DEFAULTS, {"enqueue": enqueue, "throughput": throughput,
                                                   "latency": latency}, describe, prepare))
