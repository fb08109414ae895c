"""A worker process for the tests that ``kill -9`` one: ``python _worker_proc.py DATABASE_URL [options]``.

Runs one pgq worker on the ``default`` queue whose ``blocker`` task blocks
until the process is killed, so a test can ``kill -9`` it while it holds
jobs. Prints its worker id on stdout once registered. Not a test module.

Options (for test_issue_9_unstarted_jobs_keep_their_attempts.py):

- ``--buffer N``: keep N claimed jobs buffered beyond the runners (the prefetch
  sizer is replaced by one that always tops the buffer up), and run 2 jobs at once;
- ``--record``: each handler inserts its job id into ``public.handler_starts`` first;
- ``--redis URL PREFIX``: the Redis accelerator on (prints ``claimed via redis`` when
  a claim of popped ids returns jobs).
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import psycopg

import pgq
from pgq.worker import claim_loop
from pgq.worker.prefetch import ALWAYS, ClaimSize


def _always_buffer(buffer: int) -> None:
    def size(*, concurrency: int, batch_size: int, rate: float, in_flight: int, claiming: int) -> ClaimSize:
        free = concurrency + buffer - in_flight - claiming
        return ClaimSize(min(free, batch_size), ALWAYS) if free > 0 else ClaimSize(0, -1)

    claim_loop.size_claim = size  # type: ignore[assignment]


def _say_redis_claims() -> None:
    from pgq.queries import MirrorQueries

    claim = MirrorQueries.claim_jobs_v2

    def claim_jobs_v2(self: MirrorQueries, *args: Any) -> list[Any]:
        jobs = claim(self, *args)
        if jobs:
            print("claimed via redis", flush=True)
        return jobs

    MirrorQueries.claim_jobs_v2 = claim_jobs_v2  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("--buffer", type=int, default=0)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--redis", nargs=2, metavar=("URL", "PREFIX"))
    args = parser.parse_args()
    redis = {"redis_url": args.redis[0], "redis_prefix": args.redis[1]} if args.redis else {}
    settings = pgq.Settings(database_url=args.database_url, heartbeat_interval_seconds=0.2, stale_after_seconds=60,
                            poll_interval_seconds=0.2, **redis)
    q = pgq.connect(settings=settings)
    if args.buffer:
        _always_buffer(args.buffer)
    if args.redis:
        _say_redis_claims()
    recorder = psycopg.connect(args.database_url, autocommit=True) if args.record else None
    lock = threading.Lock()

    @q.task(name="blocker", max_attempts=3)
    def blocker() -> str:
        if recorder is not None:
            with lock:
                recorder.execute("INSERT INTO public.handler_starts (job_id) VALUES (%s)",
                                 (pgq.current_job().job.id,))
        threading.Event().wait()  # until SIGKILL
        return "unreachable"

    worker = q.worker(queues=["default"], concurrency=2 if args.buffer else 1, run_maintenance=False)
    print(worker.id, flush=True)
    worker.run()


if __name__ == "__main__":
    main()
