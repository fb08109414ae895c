"""pgq's bench workloads run through procrastinate (3.x), configured for throughput as its docs advise.

Runs inside the peers' virtualenv (see README.md); never imports pgq. One
workload per run, in a database of its own (``pgq_peer_procrastinate``, created,
installed with ``SchemaManager.apply_schema_async()`` and dropped); prints one
JSON object on stdout. Configuration, from procrastinate's how-to guides:

- ``App(connector=PsycopgConnector(...))``: the async psycopg 3 connector, the
  one a worker needs; its pool (psycopg_pool.AsyncConnectionPool) sized to the
  worker's concurrency plus two, so no sub-worker waits for a connection (the
  LISTEN connection is a separate, standalone one);
- ``run_worker_async(concurrency=C)``: "Execute multiple jobs at the same
  time" (docs: by default a worker runs one job at a time; async tasks with
  ``concurrency`` sub-workers raise throughput), async task functions;
- ``listen_notify=True`` (the default): new jobs wake the worker at once, the
  polling interval is only a fallback;
- ``delete_jobs="never"`` (the default; finished jobs stay, like pgq's);
- burn-down workers run with ``wait=False`` (exit once the queue is empty);
- enqueue: ``Task.defer_async()`` one per transaction, ``Task.batch_defer_async()``
  for bulk ("Batch defer multiple jobs").

Direct use:  python procrastinate_bench.py throughput --url postgresql://postgres@127.0.0.1/postgres \
                 --set jobs=5000 --set workers=2 --set progress=true
"""

from __future__ import annotations

import asyncio
import importlib.metadata as metadata
import logging
import sys
import time
from typing import Any

import psycopg

import _peer_common as common

PEER = "procrastinate"
QUEUE = "bench"
DEFAULTS: dict[str, Any] = {
    **common.COMMON_DEFAULTS,
    "listen_notify": True,                # default
    "fetch_job_polling_interval": 5.0,    # default; a fallback when listen_notify is on
    "delete_jobs": "never",               # default: never | successful | always
    "pool_size": None,                    # worker pool size; None = concurrency + 2
}


def _pool_size(s: dict[str, Any]) -> int:
    return int(s["pool_size"] or s["concurrency"] + 2)


def describe(workload: str, s: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    versions = {p: metadata.version(p) for p in ("procrastinate", "psycopg", "psycopg-pool")}
    versions["python"] = sys.version.split()[0]
    config: dict[str, Any] = {
        "connector": "PsycopgConnector (psycopg 3, async, psycopg_pool.AsyncConnectionPool)",
        "event_loop": "asyncio",
        "schema": "App.schema_manager.apply_schema_async() into a fresh database",
        "enqueue_single": "Task.defer_async() (one statement, one commit, one NOTIFY per job)",
        "enqueue_bulk": f"Task.batch_defer_async(*kwargs): {s['bulk_chunk']} jobs per call (one statement)",
        "queue": QUEUE,
    }
    if workload in ("throughput", "latency"):
        config.update({
            "worker": "App.run_worker_async(...) in each worker process",
            "worker_processes": s["workers"],
            "analyze_after_preload": bool(s["analyze"]) if workload == "throughput" else None,
            "concurrency": s["concurrency"],
            "pool_min_size": _pool_size(s),
            "pool_max_size": _pool_size(s),
            "listen_notify": s["listen_notify"],
            "fetch_job_polling_interval_s": s["fetch_job_polling_interval"],
            "delete_jobs": s["delete_jobs"],
            "wait": workload != "throughput",
            "claim": "procrastinate_fetch_job_v2: one job per round trip (no batch claim in procrastinate)",
            "completion": "procrastinate_finish_job: one statement and one commit per job",
            "handler": "async def task, returns at once ('noop'; 'stamp' for latency)",
        })
    return versions, config


class _QuietMainModuleWarning(logging.Filter):
    """procrastinate warns when the App is built in ``__main__`` (a worker started
    elsewhere could not import its tasks). Here the tasks have explicit names and
    every worker is this same script, so the warning is noise in the stderr tail."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) != "app_defined_in___main__"


logging.getLogger("procrastinate.blueprints").addFilter(_QuietMainModuleWarning())


def _make_app(url: str, pool_size: int | None, shared: common.Shared | None = None) -> Any:
    import procrastinate

    kwargs: dict[str, Any] = {"conninfo": url}
    if pool_size:
        kwargs.update(min_size=pool_size, max_size=pool_size)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(**kwargs))

    @app.task(name="noop", queue=QUEUE)
    async def noop() -> None:
        if shared is not None:
            shared.count()

    @app.task(name="stamp", queue=QUEUE)
    async def stamp(t0: float) -> None:
        started = time.time()
        if shared is not None:
            shared.results.put((0, (started - t0) * 1000.0))
            shared.count()

    return app


async def _install(url: str) -> None:
    app = _make_app(url, None)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _enqueue_many(url: str, total: int, chunk: int) -> float:
    app = _make_app(url, None)
    async with app.open_async():
        task = app.tasks["noop"]
        t = time.perf_counter()
        for start in range(0, total, chunk):
            await task.batch_defer_async(*({} for _ in range(min(chunk, total - start))))
        return time.perf_counter() - t


# ---------------------------------------------------------------- worker process
def worker_main(shared: common.Shared, url: str, s: dict[str, Any], wait: bool) -> None:
    asyncio.run(_worker(shared, url, s, wait))


async def _worker(shared: common.Shared, url: str, s: dict[str, Any], wait: bool) -> None:
    app = _make_app(url, _pool_size(s), shared)
    async with app.open_async():  # opens the pool and waits for its connections
        shared.ready.set()
        shared.go.wait()  # nothing else runs on this loop yet
        await app.run_worker_async(
            queues=[QUEUE],
            name=f"bench-{shared.index}",
            concurrency=s["concurrency"],
            wait=wait,
            listen_notify=s["listen_notify"],
            fetch_job_polling_interval=s["fetch_job_polling_interval"],
            delete_jobs=s["delete_jobs"],
            install_signal_handlers=True,  # SIGTERM: graceful stop
        )


# ---------------------------------------------------------------- workloads
def enqueue(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    asyncio.run(_install(url))

    async def singles() -> float:
        app = _make_app(url, None)
        async with app.open_async():
            task = app.tasks["noop"]
            t = time.perf_counter()
            for _ in range(s["single_jobs"]):
                await task.defer_async()
            return time.perf_counter() - t

    single_s = asyncio.run(singles()) if s["single_jobs"] else 0.0
    bulk_s = asyncio.run(_enqueue_many(url, s["bulk_jobs"], s["bulk_chunk"])) if s["bulk_jobs"] else 0.0
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()[0]  # type: ignore[index]
    expected = s["single_jobs"] + s["bulk_jobs"]
    if stored != expected:
        raise RuntimeError(f"enqueued {expected} jobs but procrastinate_jobs holds {stored}")
    return {
        "enqueue_single_jobs": s["single_jobs"],
        "enqueue_single_jobs_per_s": round(s["single_jobs"] / single_s, 1) if single_s else None,
        "enqueue_bulk_jobs": s["bulk_jobs"],
        "enqueue_bulk_jobs_per_s": round(s["bulk_jobs"] / bulk_s, 1) if bulk_s else None,
        "stored": stored,
    }


def throughput(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    n = s["jobs"]
    asyncio.run(_install(url))
    common.log(s, f"procrastinate: pre-loading {n} jobs")
    asyncio.run(_enqueue_many(url, n, s["bulk_chunk"]))
    if s["analyze"]:
        common.analyze(url)

    with common.WorkerGroup(s["workers"], worker_main, url, s, False) as group:
        group.start()
        meter = common.CostMeter(admin, s["database"])
        t0 = group.release()
        group.join(s["timeout_s"], total=n, label="procrastinate burn-down", progress=s["progress"])
        elapsed = time.perf_counter() - t0
        cost = meter.finish(n, url)

    with psycopg.connect(url) as conn:
        succeeded, rows = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM procrastinate_jobs").fetchone()  # type: ignore[misc]
        started, started_distinct = conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM procrastinate_events WHERE type = 'started'").fetchone()  # type: ignore[misc]
    handled = group.handled()
    # With delete_jobs set, finished jobs (and their events) are gone: count what is left instead.
    completed = int(succeeded) + (n - int(rows))
    if completed != n:
        raise RuntimeError(f"procrastinate burn-down incomplete: {completed} of {n} jobs succeeded, "
                           f"{handled} handler calls")
    duplicated = int(started) - int(started_distinct)
    return {
        "jobs": n,
        "process_jobs_per_s": round(n / elapsed, 1),
        "process_seconds": round(elapsed, 3),
        "completed": completed,
        "handler_calls": handled,
        "lost_or_duplicated": (n - completed) + duplicated + abs(handled - n),
        "pg_cost": cost,
    }


def latency(s: dict[str, Any], url: str, admin: psycopg.Connection[Any]) -> dict[str, Any]:
    count = s["latency_jobs"]
    asyncio.run(_install(url))

    async def produce() -> None:
        app = _make_app(url, None)
        async with app.open_async():
            task = app.tasks["stamp"]
            for i in range(count):
                t0 = time.time()  # just before the enqueue call, like pgq's bench
                await task.defer_async(t0=t0)
                await asyncio.sleep(s["interval_ms"] / 1000.0)  # a paced producer: workers are idle
                if s["progress"] and (i + 1) % 50 == 0:
                    common.log(s, f"procrastinate latency: {i + 1}/{count} enqueued")

    with common.WorkerGroup(s["workers"], worker_main, url, s, True) as group:
        group.start()
        group.release()
        time.sleep(s["settle_s"])
        asyncio.run(produce())
        items = common.collect(group.results, count, timeout=30.0)
        group.stop()  # SIGTERM: the peer's graceful shutdown
    if len(items) != count:
        raise RuntimeError(f"procrastinate latency: {len(items)} of {count} jobs picked up within 30 s")
    return {
        "latency_jobs": count,
        "pickup_latency_ms": common.percentiles([ms for _, ms in items]),
        "picked_up": len(items),
    }


if __name__ == "__main__":
    raise SystemExit(common.main(PEER, DEFAULTS, {"enqueue": enqueue, "throughput": throughput,
                                                   "latency": latency}, describe))
