"""Claim positions and the "started through" watermark of one worker.

Each claim asks for ``n`` jobs (or names ``n`` ids) and takes the next ``n``
positions of the worker's count, whether it succeeds or not; the jobs it
returns hold the first of them, in claim order. The watermark sent with every
claim and heartbeat is the lowest position still outstanding (a claim not
answered yet) or held but not started (received, buffered, set aside for a
release), minus one: every job the worker got at or below it has started,
finished, or was released or given up. A rescue gives back the attempt of a
job above it (``rescue_job``), so a crash does not charge prefetched jobs.

The runner owns whether a job started; ``Positions`` only asks it
(``state``). A job the runner marked started counts as started once it has
run for ``START_GRACE_SECONDS`` (or finished): the runner marks it a moment
before the handler is entered, and a thread switch can stretch that moment,
so a crash right after the mark must still give the attempt back. What a
rescue then does is the stored functions' business.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import PoolTimeout

from pgq.db import connection_lost

if TYPE_CHECKING:
    from pgq.clock import Clock
    from pgq.job import Job

log = logging.getLogger("pgq.worker")

#: A heartbeat rescues an owned, unlisted job once its claim is this old (``heartbeat_worker_v2``).
CLAIM_LOST_AFTER_SECONDS = 10.0
#: Margin for the clocks (the worker's monotonic one, the database's) and the claim's own duration.
CLAIM_LOST_MARGIN_SECONDS = 1.0
#: A job the runner started counts as started in the watermark after this long (or once finished).
START_GRACE_SECONDS = 0.2

#: A claim carries the watermark at most this often (heartbeats always do).
REPORT_EVERY_SECONDS = 0.05

#: What the runner says of a job it was given (``Positions.state``).
GONE = 0  # finished, or no longer this worker's (released, cancelled, rescued, dropped)
WAITING = 1  # buffered, not started
RUNNING = 2  # started, outcome not queued yet


def reply_may_be_lost(exc: BaseException) -> bool:
    """True when a failed claim may have committed all the same: the connection broke
    while it ran (or the failure is not the database's). A statement the server refused
    (a pgq error code, a timeout) was rolled back; a pool timeout sent nothing."""
    if isinstance(exc, PoolTimeout):
        return False
    if isinstance(exc, psycopg.Error):
        return connection_lost(exc, None)
    return True


@dataclass
class _Block:
    """The jobs one claim returned: ``ids[i]`` holds position ``base + 1 + i``.
    ``next``: the first of them not known to have started."""

    base: int
    ids: list[int]
    next: int = 0


@dataclass
class _Lost:
    """Positions of a claim whose reply may have been lost, held until ``until`` (monotonic)."""

    base: int
    until: float


class Positions:
    """One worker's claim positions and watermark. Every method may be called from any thread.

    Args:
        state: ``state(job_id)`` of a job given to the runner: ``WAITING``, ``RUNNING``
            or ``GONE``.
        clock: the monotonic clock (the start grace; holding a lost claim reply's positions).
    """

    def __init__(self, state: Callable[[int], int], clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self._lock = threading.Lock()
        self._asked = 0  # positions taken so far: the next claim's base
        self._open: dict[int, int] = {}  # base -> n: claims not answered yet
        self._blocks: list[_Block] = []  # the jobs of answered claims, by base
        self._position: dict[int, int] = {}  # job id -> its latest position
        self._holding: set[int] = set()  # received, not in the runner (yet, or any more)
        self._lost: list[_Lost] = []
        self._running_since: dict[int, float] = {}  # job id -> when first seen running (the grace)
        self._watches: list[set[int]] = []  # each collects the ids claims return while it is open
        self._reported: int | None = None  # the watermark the last claim sent, and when
        self._reported_at: float | None = None

    # ------------------------------------------------------------ claims
    def reserve(self, n: int) -> tuple[int, int | None]:
        """Take ``n`` positions for a claim about to be sent: ``(position_base, started_through)``.

        ``started_through`` is None (the claim writes no watermark) when one went out
        less than ``REPORT_EVERY_SECONDS`` ago, or when it has not moved since: a
        claim that writes it updates the worker's row, one that does not only
        locks it, and a busy worker claims hundreds of times a second.
        """
        with self._lock:
            base = self._asked
            self._asked += n
            self._open[base] = n
            now = self.clock.monotonic()
            if self._reported_at is not None and now - self._reported_at < REPORT_EVERY_SECONDS:
                return base, None
            watermark = self._watermark(START_GRACE_SECONDS)
            if watermark == self._reported:
                return base, None
            self._reported, self._reported_at = watermark, now
            return base, watermark

    def returned(self, base: int, jobs: Sequence[Job], error: BaseException | None = None) -> None:
        """The claim of ``base`` answered with ``jobs`` (claim order), or failed with ``error``.

        Its jobs count as not started until ``dispatched``. A failure whose reply may
        have been lost (the claim may have committed: its jobs are this worker's in the
        database, and nobody runs them) keeps the claim's positions held until a
        heartbeat sent after ``CLAIM_LOST_AFTER_SECONDS`` has rescued such jobs as
        ClaimLost, with their attempts given back (``heartbeat_done``).
        """
        with self._lock:
            self._open.pop(base, None)
            if error is not None and reply_may_be_lost(error):
                until = self.clock.monotonic() + CLAIM_LOST_AFTER_SECONDS + CLAIM_LOST_MARGIN_SECONDS
                self._lost.append(_Lost(base, until))
            if not jobs:
                return
            ids = [job.id for job in jobs]
            for watch in self._watches:
                watch.update(ids)
            for i, job_id in enumerate(ids):
                self._position[job_id] = base + 1 + i
            self._holding.update(ids)
            bisect.insort(self._blocks, _Block(base, ids), key=lambda b: b.base)

    def dispatched(self, job_ids: Sequence[int]) -> None:
        """These jobs are in the runner now (or no longer this worker's): ask the runner."""
        with self._lock:
            self._holding.difference_update(job_ids)

    def set_aside(self, take: Callable[[], Sequence[int]]) -> list[int]:
        """Run ``take`` (it removes unstarted jobs from the runner and returns their ids)
        with no watermark computed meanwhile; those jobs count as not started until
        ``dispatched`` (call it once they are released, or not this worker's any more)."""
        with self._lock:
            ids = list(take())
            self._holding.update(ids)
            return ids

    @contextlib.contextmanager
    def watching(self) -> Iterator[set[int]]:
        """Collect the ids that claims return while the block runs (a heartbeat in flight)."""
        watch: set[int] = set()
        with self._lock:
            self._watches.append(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._watches.remove(watch)

    def unless_claimed_again(self, watch: set[int], job_ids: Sequence[int], act: Callable[[int], None]) -> None:
        """``act(job_id)`` for each of ``job_ids`` that no claim returned since ``watch`` opened.

        For a heartbeat's lost jobs: one it reports no longer owned may have been
        claimed again by this worker after the database answered (a rescue gave it
        back), and is this worker's again. Claims return under the same lock, so a
        claim is either seen here or finds the job already acted on.
        """
        with self._lock:
            for job_id in job_ids:
                if job_id not in watch:
                    act(job_id)

    def holding(self) -> list[int]:
        """Jobs received and not in the runner (the heartbeat lists them: they are held)."""
        with self._lock:
            return list(self._holding)

    # ------------------------------------------------------------ the watermark
    def watermark(self, *, final: bool = False) -> int:
        """The highest position P such that every job this worker got at or below P has started.

        ``final``: the worker is about to deregister, alive: a job the runner
        started will run whatever happens now, so it counts at once (no grace).
        """
        with self._lock:
            return self._watermark(0.0 if final else START_GRACE_SECONDS)

    def heartbeat_done(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` (monotonic, taken before sending) succeeded:
        it rescued the jobs of lost claim replies old enough, so their positions go."""
        with self._lock:
            if self._lost:
                self._lost = [lost for lost in self._lost if lost.until > sent_at]

    def _watermark(self, grace: float) -> int:
        low = self._asked + 1
        blocks = self._blocks
        now: float | None = None
        while blocks:
            block = blocks[0]
            ids = block.ids
            while block.next < len(ids):
                job_id = ids[block.next]
                position = block.base + 1 + block.next
                if self._position.get(job_id) == position:  # else claimed again since: see the later block
                    if job_id in self._holding:
                        break
                    state = self.state(job_id)
                    if state == WAITING:
                        break
                    if state == RUNNING:
                        now = self.clock.monotonic() if now is None else now
                        if now - self._running_since.setdefault(job_id, now) < grace:
                            break
                    self._running_since.pop(job_id, None)
                    del self._position[job_id]
                block.next += 1
            if block.next < len(ids):
                low = block.base + 1 + block.next
                break
            blocks.pop(0)
        if self._open:
            low = min(low, min(self._open) + 1)
        if self._lost:
            low = min(low, min(lost.base for lost in self._lost) + 1)
        return low - 1
