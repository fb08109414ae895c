"""Where an idle worker's pickup time goes: a timeline of each job from its INSERT to its handler.

``python -m bench.pickup_timeline --jobs 200`` (or run this file with another
checkout's interpreter to compare two commits: it imports only ``pgq``,
``psycopg`` and the standard library). One in-process worker (16 threads)
waits idle in schema ``pgq_timeline``; this script inserts one job at a time
with a raw ``INSERT`` (autocommit), 10 ms after the previous job's handler
started, and stamps (``time.perf_counter``) the first time each step happens
for that job: the INSERT sent and committed, the worker's NOTIFY callback, the
claim sent and back (``PostgresClaimSource.claim``), ``Runner.dispatch``, the
handler. It wraps those methods, so it measures the code it is run with; the
first 5 jobs are not counted. Prints p50 / p90 / max of each step in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

import pgq
import pgq.worker.claim as claim_module
import pgq.worker.runner as runner_module
import pgq.worker.worker as worker_module
from pgq import migrate

SCHEMA = "pgq_timeline"
STEPS = ["sent", "committed", "notified", "claim_sent", "claim_back", "dispatched", "handler"]
WARM_UP = 5


class Stamps:
    """The first time each step happened, for the job in progress."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.current: dict[str, float] | None = None

    def stamp(self, step: str) -> None:
        row = self.current
        if row is not None and step not in row:
            row[step] = time.perf_counter()

    def wrap(self, owner: Any, name: str, step: str, *, after: bool = False) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not after:
                self.stamp(step)
            result = original(*args, **kwargs)
            if after:
                self.stamp(step)
            return result

        setattr(owner, name, wrapped)


def run(url: str, jobs: int, gap_seconds: float) -> dict[str, dict[str, float]]:
    stamps = Stamps()
    stamps.wrap(worker_module.Worker, "_on_notify", "notified")
    stamps.wrap(claim_module.PostgresClaimSource, "claim", "claim_sent")
    stamps.wrap(claim_module.PostgresClaimSource, "claim", "claim_back", after=True)
    stamps.wrap(runner_module.Runner, "dispatch", "dispatched")
    started = threading.Event()

    def job() -> None:
        stamps.stamp("handler")
        started.set()

    settings = pgq.Settings(database_url=url, schema=SCHEMA)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    migrate.upgrade(settings)
    q = pgq.Queue(settings, strict_tasks=False)
    q.task(name="timeline.job", queue="timeline")(job)
    worker = pgq.Worker(q, concurrency=16, install_signal_handlers=False, run_maintenance=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with psycopg.connect(url, autocommit=True) as producer:
            deadline = time.monotonic() + 30
            while not worker._idle.is_set():  # the loop waits for work (the listener started first)
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker never went idle")
                time.sleep(0.01)
            for _ in range(jobs + WARM_UP):
                time.sleep(gap_seconds)
                started.clear()
                stamps.current = row = {"sent": time.perf_counter()}
                producer.execute(f"INSERT INTO {SCHEMA}.jobs (task, queue) VALUES ('timeline.job', 'timeline')")
                row["committed"] = time.perf_counter()
                if not started.wait(10):
                    raise RuntimeError("a job was not picked up within 10 s")
                stamps.current = None
                stamps.rows.append(row)
    finally:
        worker.stop()
        thread.join(30)
        q.close()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    rows = [r for r in stamps.rows[WARM_UP:] if all(step in r for step in STEPS)]
    result: dict[str, dict[str, float]] = {}
    for a, b in [*zip(STEPS[:-1], STEPS[1:], strict=True), ("committed", "handler")]:
        values = sorted((r[b] - r[a]) * 1000.0 for r in rows)
        result[f"{a} -> {b}"] = {"n": len(values), "p50": round(statistics.median(values), 3),
                                 "p90": round(values[int(len(values) * 0.9)], 3), "max": round(values[-1], 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("PGQ_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    args = parser.parse_args()
    for step, figures in run(args.url, args.jobs, args.gap_ms / 1000.0).items():
        print(f"{step:>26}  p50 {figures['p50']:7.3f}  p90 {figures['p90']:7.3f}  max {figures['max']:8.3f} ms"
              f"  (n={figures['n']:.0f})")
    print(f"load average {os.getloadavg()[0]:.1f}, pgq from {os.path.dirname(pgq.__file__)}")


if __name__ == "__main__":
    main()
