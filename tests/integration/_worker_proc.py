"""A worker process for test_concurrency.py: ``python _worker_proc.py DATABASE_URL``.

Runs one pgq worker on the ``default`` queue whose ``blocker`` task blocks
until the process is killed, so the test can ``kill -9`` it while it holds a
job. Prints its worker id on stdout once registered. Not a test module.
"""

from __future__ import annotations

import sys
import threading

import pgq


def main(database_url: str) -> None:
    settings = pgq.Settings(database_url=database_url, heartbeat_interval_seconds=0.5, stale_after_seconds=60,
                            poll_interval_seconds=0.2)
    q = pgq.connect(settings=settings)

    @q.task(name="blocker", max_attempts=3)
    def blocker() -> str:
        threading.Event().wait()  # until SIGKILL
        return "unreachable"

    worker = q.worker(queues=["default"], concurrency=1, run_maintenance=False)
    print(worker.id, flush=True)
    worker.run()


if __name__ == "__main__":
    main(sys.argv[1])
