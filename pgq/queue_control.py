"""The inspection and control half of ``Queue``: jobs already enqueued.

Read a job, wait for its result, cancel it; list, requeue and purge the dead
letter queue; the ``pgq status`` figures; ask a worker to drain, or evacuate it. Each method
validates its arguments, then runs its statements (``pgq.queries``) through
the queue's connection handling (``Queue._run``); the producer side (tasks,
enqueue) and that plumbing stay in ``queue.py``. The producer's calls (get,
cancel, wait, the dead letter queue) are each one operation with a sync and an
``*_async`` entry point (see ``pgq.queue_io``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pgq.errors import JobFailed, JobNotFound, ValidationError, WaitTimeout
from pgq.job import Job, JobStatus, validate_queue_name
from pgq.operations import NextChange, Op, Push, Watch
from pgq.queries import PURGE_BATCH, DeadLetter
from pgq.scheduling import pause, policy
from pgq.stats import QueueStats, collect_stats

if TYPE_CHECKING:
    from pgq.queries import Queries
    from pgq.queue_io import AsyncExecutor, SyncExecutor
    from pgq.redis.client import RedisClient
    from pgq.settings import Settings


class QueueControl:
    """Inspection and control methods of ``pgq.Queue`` (a base class of it, not used alone)."""

    # Provided by ``Queue``: its settings and statements, its Redis client and connection handling.
    settings: Settings
    queries: Queries

    if TYPE_CHECKING:
        @property
        def redis(self) -> RedisClient | None: ...

        def _run(self, fn: Callable[..., Any], *args: Any, connection: Any = None) -> Any: ...

        def _sync(self, connection: Any = None) -> SyncExecutor: ...

        def _async(self, connection: Any = None) -> AsyncExecutor: ...

    def get(self, job_id: int, *, connection: Any = None) -> Job:
        """Return the job; raise ``JobNotFound`` for an unknown id."""
        return self._sync(connection).run(self._get(job_id))

    async def get_async(self, job_id: int, *, connection: Any = None) -> Job:
        """``get`` for asyncio."""
        return await self._async(connection).run(self._get(job_id))

    def _get(self, job_id: int) -> Op[Job]:
        _check_id(job_id)
        job = yield from self.queries.get_job.op(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return job

    def cancel(self, job_id: int, *, connection: Any = None) -> bool:
        """Cancel a job (transition -> cancelled).

        A waiting/queued/retrying job is cancelled at once. A running job is cancelled
        at once too: its worker is told to stop the handler, and whatever the handler
        finishes with later is discarded. Returns False if it was already cancelled.
        Raises ``JobNotFound``, or ``InvalidTransition`` for a completed or dead job.
        """
        return self._sync(connection).run(self._cancel(job_id))

    async def cancel_async(self, job_id: int, *, connection: Any = None) -> bool:
        """``cancel`` for asyncio."""
        return await self._async(connection).run(self._cancel(job_id))

    def _cancel(self, job_id: int) -> Op[bool]:
        _check_id(job_id)
        return (yield from self.queries.cancel_job.op(job_id))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Open dead-letter entries (oldest first), optionally of one queue."""
        return self._sync().run(self._dead_letters(queue, limit))

    async def dead_letters_async(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """``dead_letters`` for asyncio."""
        return await self._async().run(self._dead_letters(queue, limit))

    def _dead_letters(self, queue: str | None, limit: int) -> Op[list[DeadLetter]]:
        if queue is not None:
            validate_queue_name(queue)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**31 - 1:
            raise ValidationError(f"limit must be a whole number from 1 to {2**31 - 1}, got {limit!r}")
        return (yield from self.queries.dead_letters.op(queue, limit))

    def requeue_dead(self, job_ids: Sequence[int] | None = None, *, queue: str | None = None,
                     with_dependents: bool = False) -> list[int]:
        """Requeue dead jobs (transition dead -> queued, attempts reset); return their ids.

        ``job_ids=None`` requeues every dead job (of ``queue`` if given). A named id that
        is unknown or not dead raises and nothing is requeued. ``with_dependents``: the
        waiting descendants cancelled because of these jobs go back to waiting.
        """
        return self._sync().run(self._requeue_dead(job_ids, queue, with_dependents))

    async def requeue_dead_async(self, job_ids: Sequence[int] | None = None, *, queue: str | None = None,
                                 with_dependents: bool = False) -> list[int]:
        """``requeue_dead`` for asyncio."""
        return await self._async().run(self._requeue_dead(job_ids, queue, with_dependents))

    def _requeue_dead(self, job_ids: Sequence[int] | None, queue: str | None, with_dependents: bool) -> Op[list[int]]:
        if not isinstance(with_dependents, bool):
            raise ValidationError(f"with_dependents must be True or False, got {with_dependents!r}")
        if job_ids is not None:
            job_ids = _check_ids(job_ids)
        if queue is not None:
            validate_queue_name(queue)
        requeue = self.queries.graph.requeue_dead_with_dependents if with_dependents else self.queries.requeue_dead_jobs
        requeued = yield from requeue.op(job_ids, queue)
        if requeued and self.settings.redis_url is not None:
            from pgq.queries import MirrorQueries

            yield Push((yield from MirrorQueries(self.settings.schema).runnable_entries.op(requeued)))
        return list(requeued)

    def purge_dead(self, job_ids: Sequence[int] | None = None, *, older_than: float = 0.0) -> list[int]:
        """Delete dead jobs (and their dead letters and history) that died over ``older_than`` seconds ago.

        ``job_ids=None`` purges every such dead job. The work is done in batches of
        up to 10,000 jobs (the bound of one ``purge_dead_jobs()`` call), each its own
        short transaction, so a large dead letter queue never holds one long one; a
        batch that fails leaves the earlier batches purged. Returns the purged ids.
        """
        return self._sync().run(self._purge_dead(job_ids, older_than))

    async def purge_dead_async(self, job_ids: Sequence[int] | None = None, *, older_than: float = 0.0) -> list[int]:
        """``purge_dead`` for asyncio."""
        return await self._async().run(self._purge_dead(job_ids, older_than))

    def _purge_dead(self, job_ids: Sequence[int] | None, older_than: float) -> Op[list[int]]:
        if job_ids is not None:
            job_ids = _check_ids(job_ids)
        if not _is_seconds(older_than):
            raise ValidationError(f"older_than must be a finite number of seconds >= 0, got {older_than!r}")
        purged: list[int] = []
        if job_ids is not None:
            for start in range(0, len(job_ids), PURGE_BATCH):
                purged += yield from self.queries.purge_dead_jobs.op(job_ids[start:start + PURGE_BATCH],
                                                                     float(older_than))
            return purged
        while True:
            done = yield from self.queries.purge_dead_jobs.op(None, float(older_than))
            purged += done
            if len(done) < PURGE_BATCH:
                return purged

    def stats(self) -> QueueStats:
        """Depth per queue x status x priority, oldest waiting age, workers, DLQ size."""
        return self._run(collect_stats, self.queries)  # type: ignore[no-any-return]

    def wait(self, job_id: int, timeout: float | None = None, *, poll_interval: float = 0.05) -> Any:
        """Wait until the job is completed and return its result.

        Polls the job's status (every 5 ms at first, then every ``poll_interval`` seconds).
        Raises ``JobFailed`` when it ends dead or cancelled, ``WaitTimeout`` after
        ``timeout`` seconds, ``JobNotFound`` for an unknown id.
        """
        return self._sync().run(self._wait(job_id, timeout, poll_interval))

    async def wait_async(self, job_id: int, timeout: float | None = None, *, poll_interval: float = 0.05) -> Any:
        """``wait`` for asyncio, woken by NOTIFY instead of polling.

        The status is read once, then again only when a notification says some job
        changed status (one LISTEN connection per event loop serves every waiter, and
        reads their jobs in one statement). ``poll_interval`` applies only with
        ``Settings.listen`` off (poll-only mode).
        """
        return await self._async().run(self._wait(job_id, timeout, poll_interval))

    def _wait(self, job_id: int, timeout: float | None, poll_interval: float) -> Op[Any]:
        _check_id(job_id)
        if timeout is not None and not _is_seconds(timeout):
            raise ValidationError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
        if not _is_seconds(poll_interval) or poll_interval == 0:
            raise ValidationError(f"poll_interval must be a finite number of seconds > 0, got {poll_interval!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = yield Watch(job_id, float(poll_interval))  # before the first read: no change is missed
        while True:
            row = yield from self.queries.job_outcome.op(job_id)
            if row is None:
                raise JobNotFound(f"job {job_id} does not exist")
            status, result, last_error = row
            if status == JobStatus.COMPLETED:
                return result
            if status in (JobStatus.DEAD, JobStatus.CANCELLED):
                raise JobFailed(job_id, status, last_error)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {status} after {timeout} s")
            yield NextChange(watch, remaining)

    def drain_worker(self, worker_id: uuid.UUID) -> bool:
        """Ask a worker to drain (``pgq.drain_worker``; worker transition active -> draining).

        The worker claims nothing more, releases its unstarted jobs, finishes the
        running ones (within its ``shutdown_grace_seconds``), deregisters and exits.
        Returns False when it was already draining. Raises ``InvalidTransition`` for a
        stopped or unknown worker.
        """
        if not isinstance(worker_id, uuid.UUID):
            raise ValidationError(f"worker_id must be a uuid.UUID, got {worker_id!r}")
        return bool(self._run(self.queries.drain_worker, worker_id))

    def evacuate_worker(self, worker_id: uuid.UUID, reason: str) -> bool:
        """Evacuate a worker (``pgq.evacuate_worker``; worker transition active -> draining).

        As ``drain_worker``, with ``reason`` recorded in ``workers.evacuation_reason``;
        the worker gives back what still runs after its ``evacuation_grace_seconds``
        and its process exits with code 75 (``EXIT_EVACUATED``) for its supervisor to
        replace it. Returns False when it was already evacuated. Raises
        ``ValidationError`` for a blank reason (or one over 500 characters),
        ``InvalidTransition`` for a stopped or unknown worker.
        """
        if not isinstance(worker_id, uuid.UUID):
            raise ValidationError(f"worker_id must be a uuid.UUID, got {worker_id!r}")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise ValidationError(f"reason must say why, in 1 to 500 characters, got {reason!r}")
        return bool(self._run(self.queries.evacuate_worker, worker_id, reason, "operator"))


    # ------------------------------------------------------------ how queues are claimed
    def pause_queue(self, queue: str) -> bool:
        """Pause a queue (claims take none of its jobs; enqueue works); see ``pgq.scheduling.pause``."""
        return bool(self._run(pause.pause_queue, self.settings.schema, validate_queue_name(queue)))

    def resume_queue(self, queue: str) -> bool:
        """Resume a paused queue; see ``pgq.scheduling.pause``."""
        return bool(self._run(pause.resume_queue, self.settings.schema, validate_queue_name(queue)))

    def paused_queues(self) -> list[pause.PausedQueue]:
        """The queues paused now (``pgq.paused_queues``): since when, by whom, jobs waiting."""
        return list(self._run(pause.paused_queues, self.settings.schema))

    def set_queue_policy(self, queue: str, *, max_running: int | None = None, rate_limit: int | None = None,
                         rate_period: float | dt.timedelta | None = None, group_max_running: int | None = None,
                         group_rate_limit: int | None = None, group_rate_period: float | dt.timedelta | None = None,
                         fair_share: bool = False, aging_step: float | dt.timedelta | None = None) -> None:
        """Set ``queue``'s claim rules, replacing its previous ones (see ``pgq.scheduling.policy``).

        Periods and the aging step are seconds (or timedeltas). Raises ``ValidationError``
        for a bad rule, or for none at all (``clear_queue_policy`` removes a policy).
        """
        rules = policy.QueuePolicy.build(
            queue, max_running=max_running, rate_limit=rate_limit, rate_period=rate_period,
            group_max_running=group_max_running, group_rate_limit=group_rate_limit,
            group_rate_period=group_rate_period, fair_share=fair_share, aging_step=aging_step)
        self._run(policy.set_policy, self.settings.schema, rules)

    def clear_queue_policy(self, queue: str) -> bool:
        """Remove ``queue``'s claim rules and its groups' weights; False when it had none."""
        return bool(self._run(policy.clear_policy, self.settings.schema, validate_queue_name(queue)))

    def set_group_weight(self, queue: str, group_key: str, weight: float) -> None:
        """The weight of ``group_key`` in ``queue``'s fair share (default 1; '' is the jobs without a group)."""
        self._run(policy.set_group_weight, self.settings.schema, queue, group_key, weight)

    def queue_policies(self) -> list[policy.PolicyUsage]:
        """Every queue with claim rules, and their use now (``pgq.queue_policy_usage``)."""
        return list(self._run(policy.policies, self.settings.schema))


def _check_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 1 <= job_id <= 2**63 - 1:
        raise ValidationError(f"job id must be a positive whole number, got {job_id!r}")
    return job_id


def _check_ids(job_ids: object) -> list[int]:
    if isinstance(job_ids, (str, bytes, Mapping)) or not isinstance(job_ids, Iterable):
        raise ValidationError(f"job ids must be a list of job ids, got {job_ids!r}")
    return [_check_id(i) for i in job_ids]


def _is_seconds(value: object) -> bool:
    """A finite, non-negative number of seconds (NaN and infinity would never time out)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf
