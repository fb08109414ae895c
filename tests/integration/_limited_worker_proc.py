"""A worker process for the concurrency-limit audit: ``python _limited_worker_proc.py DATABASE_URL [--redis URL PREFIX]``.

Runs one pgq worker (4 runners, maintenance on) on the queue ``limited``. Its
``work`` task records each run in ``public.limit_runs`` (job, attempt, pid,
start and end by the database clock), holding the job ``seconds`` seconds in
between: the audit replays these intervals and counts how many ran at once.
Prints its worker id on stdout once registered. Not a test module.
"""

from __future__ import annotations

import argparse
import os
import threading

import psycopg

import pgq


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("--redis", nargs=2, metavar=("URL", "PREFIX"))
    args = parser.parse_args()
    redis = {"redis_url": args.redis[0], "redis_prefix": args.redis[1]} if args.redis else {}
    settings = pgq.Settings(database_url=args.database_url, heartbeat_interval_seconds=0.2, stale_after_seconds=1.0,
                            poll_interval_seconds=0.05, maintenance_interval_seconds=0.2, **redis)
    q = pgq.connect(settings=settings)
    recorder = psycopg.connect(args.database_url, autocommit=True)
    lock = threading.Lock()

    @q.task(name="work", queue="limited", max_attempts=5)
    def work(seconds: float) -> None:
        job = pgq.current_job().job
        with lock:
            run = recorder.execute(
                "INSERT INTO public.limit_runs (job_id, attempt, pid, group_key, started_at)"
                " SELECT %s, %s, %s, group_key, clock_timestamp() FROM pgq.jobs WHERE id = %s"
                " RETURNING run", (job.id, job.attempts, os.getpid(), job.id)).fetchone()
        threading.Event().wait(seconds)  # the job's work
        with lock:
            recorder.execute("UPDATE public.limit_runs SET ended_at = clock_timestamp() WHERE run = %s",
                             (run[0] if run else None,))

    worker = q.worker(queues=["limited"], concurrency=4)
    print(worker.id, flush=True)
    worker.run()


if __name__ == "__main__":
    main()
