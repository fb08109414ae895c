"""The app of the ``pgq worker`` processes in test_issue_10_cron.py: one task, ``tick``, on queue
``cron`` (the schedules' jobs); the processes serve another queue, so the ticks stay queued for the
test to count. Settings come from the environment (``PGQ_DATABASE_URL``, ...). Not a test module."""

from __future__ import annotations

import pgq

queue = pgq.connect()


@queue.task(name="tick", queue="cron")
def tick() -> None:
    """Nothing: the test counts the jobs, it does not run them."""
