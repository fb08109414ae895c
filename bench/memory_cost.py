"""What the execution memory costs a worker: a burn-down where 10 % of jobs fail.

``python -m bench.memory_cost [--admin-url URL] [--jobs 20000] [--rounds 3]``
migrates a template database once, then for each round and each mode (memory
``off``; on in local mode with the writer in a ``process`` of its own, the
default; on with the writer in a ``thread`` of the worker) clones it, enqueues
``--jobs`` no-op jobs of which every tenth raises (``max_attempts=1``: it fails
once and is dead), and times ``Worker.run(burst=True)`` from start to return
(the writer's close included), and the processing alone (database time from
the first start to the last outcome: the burn-down's rate, without the
worker's shutdown, which gives the writer its last flush). CPU is the worker
process's, and separately its children's (the writer's process). ``--warm``
starts the writer (and opens its store) before the clock: the steady state of
a long-running worker, without the one-time start, which the writer's CPU
then leaves out too. Modes alternate so that
drift hits all. Prints one JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from typing import Any

import psycopg

import pgq
from pgq.db import quote_ident
from pgq.memory.writer import FinishedAttempt, MemoryWriter
from pgq.migrate import upgrade

TEMPLATE = "pgq_memory_cost_template"


def _url(admin: str, name: str) -> str:
    return admin.rsplit("/", 1)[0] + "/" + name


def _recreate(admin: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return _url(admin, name)


MODES = ("off", "process", "thread")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer_pid(memory: MemoryWriter | None) -> int | None:
    process = getattr(memory.sink, "process", None) if memory is not None else None
    return process.pid if process is not None else None


def warm_up(memory: MemoryWriter) -> None:
    """Start the writer and open its store before the clock starts (one context of a job that
    does not exist), so that a run measures the steady state, not the one-time start: the
    writer's process importing pgq, numpy and qdrant-client (or, in a thread, the worker
    importing qdrant-client) is 1–2 s of CPU, paid once per worker process."""
    now = time.time()
    attempt = FinishedAttempt(0, 1, "warm-up", "warm-up", "failed", now, now, "WarmUp", "warm-up", None, (), None)
    memory.sink.write([attempt], now)


def burn_down(url: str, jobs: int, concurrency: int, memory_path: str | None, schema: str = "pgq",
              writer: str = "process", warm: bool = False) -> dict[str, Any]:
    """One burn-down: wall time of ``Worker.run(burst=True)``, database processing time, the
    process's CPU time per job (every thread: the worker's, the writer's, the embedder's) and
    its children's (the writer's process, counted once it has ended: ``run`` waits for it).
    ``warm``: the writer is started before the clock (``warm_up``)."""
    settings = pgq.Settings(database_url=url, schema=schema, memory=memory_path is not None, memory_path=memory_path,
                            memory_writer=writer)
    with pgq.connect(settings=settings) as q:
        @q.task(name="work", max_attempts=1)
        def work(n: int) -> int:
            if n % 10 == 0:
                raise ConnectionResetError(f"peer 10.0.{n % 250}.{n % 7} reset the connection (request {n})")
            return n

        for start in range(0, jobs, 5000):
            q.enqueue_many([q.job_spec("work", {"n": n}) for n in range(start, min(jobs, start + 5000))])
        worker = q.worker(concurrency=concurrency, install_signal_handlers=False, run_maintenance=False)
        if warm and worker.memory is not None:
            warm_up(worker.memory)
        # A warm writer's process already spent its start (imports, opening the store): counted
        # from here, its CPU is what the run's contexts cost it (until it has ended: ``run`` waits).
        pid = _writer_pid(worker.memory)
        started = process_cpu(pid) if pid is not None else 0.0
        t, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        worker.run(burst=True)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        children = _children_cpu() - children - started
        counters = worker.memory.counters.__dict__ if worker.memory is not None else None
        with q.pool.connection() as conn:
            # Database time from the first start to the last outcome: the burn-down without
            # the worker's shutdown (which gives the writer up to 5 s to finish).
            row = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8"
                               f" FROM {quote_ident(schema)}.jobs").fetchone()
        processing = float(row[0]) if row and row[0] is not None else float("nan")
    return {"seconds": round(seconds, 3), "processing_seconds": round(processing, 3),
            "cpu_ms_per_job": round(cpu * 1000 / jobs, 4), "child_cpu_ms_per_job": round(children * 1000 / jobs, 4),
            "jobs_per_second": round(jobs / processing, 1), "writer": counters}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES), help="off, process, thread (comma-separated)")
    parser.add_argument("--warm", action="store_true", help="start the writer before the clock (steady state)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    upgrade(pgq.Settings(database_url=_recreate(args.admin_url, TEMPLATE)))
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            url = _recreate(args.admin_url, "pgq_memory_cost_run", TEMPLATE)
            with tempfile.TemporaryDirectory() as path:
                runs[mode].append(burn_down(url, args.jobs, args.concurrency, None if mode == "off" else path,
                                            writer="thread" if mode == "thread" else "process", warm=args.warm))
                runs[mode][-1]["load_average"] = [round(x, 1) for x in os.getloadavg()]

    def median(key: str) -> dict[str, float]:
        return {mode: statistics.median(r[key] for r in rs) for mode, rs in runs.items()}

    seconds, processing, cpu, child = (median("seconds"), median("processing_seconds"), median("cpu_ms_per_job"),
                                       median("child_cpu_ms_per_job"))
    base = modes[0]

    def cost(values: dict[str, float]) -> dict[str, float]:
        return {mode: round(100 * (v / values[base] - 1), 1) for mode, v in values.items() if mode != base}

    print(json.dumps({"jobs": args.jobs, "failing": "10 %", "concurrency": args.concurrency, "baseline": base,
                      "warm": args.warm,
                      "runs": runs, "median_seconds": seconds, "median_processing_seconds": processing,
                      "median_cpu_ms_per_job": cpu, "median_child_cpu_ms_per_job": child,
                      "overhead_percent": cost(seconds), "processing_overhead_percent": cost(processing),
                      "cpu_overhead_percent": cost(cpu)}, indent=2))
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        for name in ("pgq_memory_cost_run", TEMPLATE):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
