"""What the execution memory's writer costs the worker's process, per remembered failure.

``python -m bench.memory_writer_cpu [--failures 2000] [--rounds 2]`` feeds
``MemoryWriter.observe`` the failures of no-op jobs (a real traceback, a
message with ids), then ``flush``, with the writer's sink in a process of its
own (``PGQ_MEMORY_WRITER=process``) and in a thread of this process
(``thread``), alternately. It reports this process's CPU per failure (what the
worker pays: taking the values, pickling them, or in a thread, everything) and
the child's whole-life CPU (its start included). The first batch is written
before the clock (the sink started, the store open): the steady state.
Unlike a burn-down (``bench.memory_cost``), no Postgres and no worker threads
share the measurement, so a busy machine blurs it less. Prints one JSON record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import tempfile
import time
import traceback
from typing import Any

import pgq
from pgq.executor import Failed
from pgq.job import Job, JobStatus
from pgq.memory.writer import MemoryWriter


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def failures(n: int) -> list[tuple[Job, Failed]]:
    def work(i: int) -> None:
        raise ConnectionResetError(f"peer 10.0.{i % 250}.{i % 7} reset the connection (request {i})")

    try:
        work(5)
    except ConnectionResetError:
        trace = traceback.format_exc()
    now = dt.datetime.now(dt.UTC)
    return [(Job(id=i + 1, queue="default", task="work", payload={"n": i}, priority=3, status=JobStatus.RUNNING,
                 run_at=now, attempts=1, max_attempts=1, timeout=None, unique_key=None, worker_id=None,
                 started_at=now, finished_at=None, result=None, last_error=None, created_at=now, updated_at=now,
                 trace_context=None),
             Failed("ConnectionResetError", f"peer 10.0.{i % 250}.{i % 7} reset the connection (request {i})", trace))
            for i in range(n)]


def one(mode: str, pool: list[tuple[Job, Failed]], warm: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as path:
        settings = pgq.Settings(memory=True, memory_path=path, memory_writer=mode, memory_flush_interval_seconds=3600)
        writer = MemoryWriter(settings, "bench")
        for job, outcome in pool[:warm]:
            writer.observe(job, outcome)
        writer.flush()
        cpu, children = time.process_time(), _children_cpu()
        for job, outcome in pool[warm:]:
            writer.observe(job, outcome)
        writer.flush()
        cpu = time.process_time() - cpu
        writer.close()
        return {"worker_ms_per_failure": round(cpu * 1000 / (len(pool) - warm), 4),
                "child_cpu_seconds": round(_children_cpu() - children, 2), "stored": writer.counters.stored,
                "load_average": [round(x, 1) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--failures", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warm = 256
    pool = failures(args.failures + warm)
    runs: dict[str, list[dict[str, Any]]] = {"process": [], "thread": []}
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode].append(one(mode, pool, warm))
    print(json.dumps({"failures": args.failures, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
