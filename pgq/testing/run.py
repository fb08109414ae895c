"""``run_until_empty``: run the due jobs in-process, through the real claim path, and say what happened.

A ``pgq.Worker`` of the queue (no signal handlers, no maintenance thread)
claims and runs batches with ``run_once()`` until a claim comes back empty;
before each claim the due ticks of periodic schedules are enqueued, as the
maintenance leader would. What happened is read back from Postgres: the
attempts this worker finished (``job_executions``) and each job's status now.
A cap on the attempts run stops a task that enqueues itself forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgq.db import translated
from pgq.errors import PgqError, ValidationError
from pgq.job import Job, JobStatus
from pgq.scheduling.cron import CronService
from pgq.queries import KitQueries

if TYPE_CHECKING:
    from pgq.queue import Queue

DEFAULT_MAX_JOBS = 1000


@dataclass(frozen=True)
class Attempt:
    """One attempt the run made (a ``job_executions`` row)."""

    job_id: int
    task: str
    attempt: int
    outcome: str  # completed, failed, timed_out, lost, cancelled or interrupted
    error_type: str | None
    error_message: str | None
    traceback: str | None
    duration_ms: float

    def describe(self) -> str:
        error = f": {self.error_type}: {self.error_message}" if self.error_type else ""
        return f"job {self.job_id} ({self.task}) attempt {self.attempt} {self.outcome}{error}"


@dataclass(frozen=True)
class RunResult:
    """What ``run_until_empty`` did: the attempts in the order they finished, and the jobs now."""

    attempts: list[Attempt] = field(default_factory=list)
    jobs: dict[int, Job] = field(default_factory=dict)  # every job that ran, as it is now

    def _with(self, status: JobStatus) -> list[int]:
        return [job_id for job_id in self.ran if self.jobs[job_id].status is status]

    @property
    def ran(self) -> list[int]:
        """Ids of the jobs that ran, in the order of their first attempt's end."""
        return list(dict.fromkeys(a.job_id for a in self.attempts))

    @property
    def completed(self) -> list[int]:
        """Jobs that ran and are completed now."""
        return self._with(JobStatus.COMPLETED)

    @property
    def retrying(self) -> list[int]:
        """Jobs that failed and wait for a retry (not yet due: advance the clock to run it)."""
        return self._with(JobStatus.RETRYING)

    @property
    def dead(self) -> list[int]:
        """Jobs that ran out of attempts or failed fatally (each has a dead letter)."""
        return self._with(JobStatus.DEAD)

    @property
    def failed(self) -> list[Attempt]:
        """The attempts that did not complete."""
        return [a for a in self.attempts if a.outcome != "completed"]

    @property
    def results(self) -> dict[int, Any]:
        """The stored result of each completed job."""
        return {job_id: self.jobs[job_id].result for job_id in self.completed}

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` listing every failed attempt with its traceback (none: return)."""
        if self.failed:
            raise AssertionError(f"{len(self.failed)} attempt(s) failed:\n" + "\n".join(
                a.describe() + ("\n" + a.traceback if a.traceback else "") for a in self.failed))


class RunLimitExceeded(PgqError):
    """``run_until_empty`` ran ``max_jobs`` attempts and jobs were still due (``result``: what ran,
    the one attempt that showed it included)."""

    def __init__(self, max_jobs: int, result: RunResult) -> None:
        self.max_jobs = max_jobs
        self.result = result
        tasks = sorted({a.task for a in result.attempts[-20:]})
        super().__init__(
            f"run_until_empty ran more than max_jobs={max_jobs} attempts and jobs were still due (latest tasks: {', '.join(tasks)}): "
            "a task that enqueues itself, or a retry with no delay? Raise max_jobs if this many is expected; "
            "the attempts are on this error's result")


def run_until_empty(queue: Queue, /, *, queues: Sequence[str] | None = None, max_jobs: int = DEFAULT_MAX_JOBS,
                    concurrency: int = 1, periodic: bool = True) -> RunResult:
    """Run the due jobs of ``queue``'s tasks in this process until none is due; commits.

    Jobs run through the real claim path (``Worker.run_once()``: the stored
    functions, real Postgres), one batch of ``concurrency`` at a time, and their
    outcomes are written before the next claim; children released by a
    completed parent run in the same call, so do retries that fall due while it
    runs (a retry waits for its backoff in real time: advance the clock to run it).

    Args:
        queues: the queue names to claim from; default the queues of the registered tasks.
        max_jobs: most attempts to run; more still due raises ``RunLimitExceeded``.
        concurrency: jobs claimed and run at once (1: one after the other, in claim order).
        periodic: enqueue the due ticks of the periodic schedules before each claim, as
            the maintenance leader would.
    Returns:
        a ``RunResult``.
    Raises:
        ValidationError: a bad argument; nothing ran.
        RunLimitExceeded: ``max_jobs`` attempts ran and jobs were still due.
    """
    from pgq.worker import Worker

    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
        raise ValidationError(f"max_jobs must be a whole number >= 1, got {max_jobs!r}")
    if not isinstance(periodic, bool):
        raise ValidationError(f"periodic must be True or False, got {periodic!r}")
    worker = Worker(queue, queues=queues, concurrency=concurrency, install_signal_handlers=False,
                    run_maintenance=False)
    cron = CronService(queue.settings.schema)
    ran = 0
    try:
        while True:
            if periodic:
                _tick(queue, cron)
            if ran >= max_jobs:
                if worker.run_once(max_jobs=1):
                    raise RunLimitExceeded(max_jobs, _result(queue, worker))
                break
            claimed = worker.run_once(max_jobs=min(concurrency, max_jobs - ran))
            if not claimed:
                break
            ran += claimed
    finally:
        worker.close()
    return _result(queue, worker)


def _tick(queue: Queue, cron: CronService) -> None:
    """Enqueue the due ticks of the stored periodic schedules (``run_once`` stores the queue's
    ``@periodic`` ones; ``QueueClock.advance`` does before it moves their ticks)."""
    with translated(queue.settings.database_url), queue.pool.connection() as conn:
        cron.run_once(conn)


def _result(queue: Queue, worker: Any) -> RunResult:
    with translated(queue.settings.database_url), queue.pool.connection() as conn:
        rows = KitQueries(queue.settings.schema).attempts(conn, worker.id)
    attempts = [Attempt(job_id=row[0], task=row[1], attempt=row[2], outcome=row[3], error_type=row[4],
                        error_message=row[5], traceback=row[6], duration_ms=float(row[7])) for row in rows]
    ids = dict.fromkeys(a.job_id for a in attempts)
    return RunResult(attempts, {job_id: queue.get(job_id) for job_id in ids})


