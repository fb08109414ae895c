"""The ``Worker`` facade: registration, wiring of the worker's parts, and shutdown.

One process holds a bounded pool (``Settings.pool_size`` connections) plus one
LISTEN connection, whatever its concurrency. The parts, each in its module:
the ``ClaimLoop`` decides when and how much to claim and runs the claims
through a ``ClaimSource`` (Postgres, or the Redis accelerator's); the
``Runner`` runs the jobs (threads for sync handlers, one event loop for async
ones) with no transaction open; the ``Acknowledger`` writes their outcomes in
batches; ``Background`` sends heartbeats and runs the maintenance round;
``Positions`` numbers the claims and keeps the watermark they and the
heartbeats report. A drain (SIGTERM, ``stop()``, or asked in the database)
ends claiming and shuts the worker down; an evacuation (the worker's own
health, ``pgq.health.evacuation``, or an operator's ``evacuate_worker``) is a
drain with a grace period of its own and a reason (``Worker.evacuation``).
Deciding what an outcome means is the database's job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pgq.scheduling.cron import register_periodic
from pgq.clock import Clock, SystemClock
from pgq.db import translated, wait_for_database
from pgq.errors import TooManyStuckHandlers, ValidationError
from pgq.health.evacuation import EvacuationPolicy, weigh_against_peers
from pgq.maintenance import Maintenance
from pgq.memory.writer import open_writer
from pgq.notify import Listener
from pgq.worker.acknowledger import Acknowledger
from pgq.worker.claim import ClaimSource, PostgresClaimSource
from pgq.worker.claim_loop import ClaimLoop
from pgq.worker.checks import WorkerQueue, checked
from pgq.worker.counters import WorkerCounters
from pgq.worker.heartbeat import Background, Heartbeat
from pgq.worker.positions import GONE, RUNNING, WAITING, Positions
from pgq.worker.prefetch import ALWAYS
from pgq.worker.runner import Runner, Slot
from pgq.worker.stuck import StuckReport, WithStuckReport

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.health.worker_exporter import WorkerExporter
    from pgq.redis.reconciler import ReconcilerService

log = logging.getLogger("pgq.worker")


class _Stopped(Exception):
    """``stop()`` while ``run()`` waited for the database."""


class Worker:
    """Runs the jobs of ``queue``'s tasks from ``queues``.

    Args:
        queue: the ``pgq.Queue`` whose tasks this worker runs.
        queues: queue names to claim from; default: the queues of the registered tasks.
        concurrency: jobs run at once (sync handlers in a thread pool of this size,
            async handlers on one event loop).
        batch_size: most jobs claimed per round trip (``Settings.claim_batch_size``).
        worker_id: this worker's id (default: a new random one).
        install_signal_handlers: SIGTERM/SIGINT drain gracefully; a second signal stops now.
        run_maintenance: take part in the leader election for maintenance.
        clock: the monotonic clock for deadlines and intervals (tests pass a manual one).
        max_stuck_handlers: sync handlers stuck past their timeout (their threads
            replaced) at which the worker drains and ``run()`` raises
            ``TooManyStuckHandlers``; default: ``concurrency``.
        metrics_port: serve Prometheus metrics on this port while running (0: off;
            default ``Settings.metrics_port``, ``PGQ_METRICS_PORT``); see docs/metrics.md.
    Raises:
        ValidationError: a bad argument.
        ConfigurationError: a metrics port without ``pgq[prometheus]`` installed.
    """

    def __init__(
        self,
        queue: WorkerQueue,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        *,
        batch_size: int | None = None,
        worker_id: uuid.UUID | None = None,
        install_signal_handlers: bool = True,
        run_maintenance: bool = True,
        clock: Clock | None = None,
        max_stuck_handlers: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.queues, batch = checked(queue, queues, concurrency, batch_size, worker_id, max_stuck_handlers)
        self.queue = queue
        self.settings = queue.settings
        self.queries = queue.queries
        self.concurrency = concurrency
        self.batch_size = batch
        self.id = worker_id or uuid.uuid4()
        self.install_signal_handlers = install_signal_handlers
        self.run_maintenance = run_maintenance
        self.clock = clock or SystemClock()
        self.counters = WorkerCounters()
        self.maintenance: Maintenance | None = None
        self._metrics_port = self._exporter_port(metrics_port)
        self._exporter: WorkerExporter | None = None
        if self._metrics_port:
            from pgq.health.worker_exporter import WorkerExporter

            self._exporter = WorkerExporter(self.id, self.counters, lambda: self._runner.count())
            self.counters.exporter = self._exporter
        #: The port ``/metrics`` is served on while the worker runs (None: not serving).
        self.metrics_port: int | None = None

        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._stop_background = threading.Event()
        # Set while the claim loop waits for work (a claim source may then take wake-ups).
        self._idle = threading.Event()
        self._registered = False
        self._listener: Listener | None = None
        self._background: list[threading.Thread] = []
        self._reconciler: ReconcilerService | None = None
        #: How a drain was asked for in the database (a refused claim, the heartbeat's
        #: answer, a notification); None when it was not.
        self.drained_by: str | None = None
        #: Why this worker was evacuated (by itself or an operator), None when it was not:
        #: ``run()`` then returns after handing its work back, and ``pgq worker`` exits
        #: with code 75 (``pgq.health.evacuation.EXIT_EVACUATED``).
        self.evacuation: str | None = None
        #: Its own health: the latest score (which sizes its claims) and the evacuation rules.
        self.health = EvacuationPolicy(after_samples=self.settings.evacuation_after_samples,
                                       horizon_seconds=self.settings.evacuation_horizon_seconds,
                                       rss_limit_bytes=self.settings.health_rss_limit_bytes,
                                       score_trend=self.settings.evacuation_score_trend)
        #: True once ``run()`` reached the database (false: stopped while waiting for it).
        self.started = False
        self._positions = Positions(self._job_state, self.clock)
        self._source = self._claim_source()
        #: The execution memory's writer (``pgq.memory``), None unless ``Settings.memory_enabled``.
        self.memory = open_writer(self.settings, self.id)
        self._acknowledger = Acknowledger(
            self.settings, self._pool, self.queries, self.id, self.counters, self.clock,
            before_write=self._source.finished, wake=self._wake.set, force=self._force,
            observe=self.memory.observe if self.memory is not None else None, quiet=self._holds_nothing)
        self._runner = Runner(queue.tasks, concurrency, self._acknowledger, self._source, self.clock,
                              self._wake, self._stopping, max_stuck=max_stuck_handlers,
                              on_too_many_stuck=self._too_many_stuck, tracer=queue.tracer)
        self._claims = ClaimLoop(
            self.id, self.settings, self._source, self._runner, self._acknowledger, self.counters, self.clock,
            concurrency=concurrency, batch_size=batch, wake=self._wake, stopping=self._stopping, idle=self._idle,
            positions=self._positions, reregister=self._reregister, drain=self._drain,
            due_in=self._seconds_until_due, health=self.health)
        self._heartbeat = Heartbeat(self._pool, self.queries, self.id, self._runner, self._acknowledger,
                                    self._source, self._positions, self.clock, drain=self._drain,
                                    policy=self.health,
                                    evacuate=self._evacuate_unless_shared if self.settings.evacuation else None)
        self._stuck_report = StuckReport(self._pool, self.queries, self.id, self._runner)

    def _exporter_port(self, port: int | None) -> int:
        """The metrics port asked for (0: none), checked, with prometheus-client importable."""
        if port is None:
            port = self.settings.metrics_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError(f"metrics_port must be a TCP port from 1 to 65535 (0 = off), got {port!r}")
        if port:
            from pgq.health.worker_exporter import missing_extra

            try:
                import prometheus_client  # noqa: F401  (fail now, not when the worker starts)
            except ImportError:
                raise missing_extra("prometheus", "metrics_port (PGQ_METRICS_PORT, --metrics-port)") from None
        return port

    def _serve_metrics(self) -> None:
        """Start serving ``/metrics`` (once), when a port was asked for."""
        exporter = self._exporter
        if exporter is not None and self.metrics_port is None:
            self.metrics_port = exporter.serve(self._metrics_port, self.settings.metrics_address)
            log.info("worker %s serves Prometheus metrics on %s:%d/metrics", self.id, self.settings.metrics_address,
                     self.metrics_port)

    def close_metrics(self) -> None:
        """Stop serving ``/metrics`` (``run()`` does at exit; after ``run_once()``, call it)."""
        if self._exporter is not None:
            self._exporter.close()
        self.metrics_port = None

    def _claim_source(self) -> ClaimSource:
        """Postgres claims; with ``redis_url`` set, ids from Redis claimed in Postgres."""
        postgres = PostgresClaimSource(self._pool, self.queries, self.id, self.queues, self.counters,
                                       self._positions)
        client = self.queue.redis
        if client is None:
            return postgres
        from pgq.redis.claim_source import RedisClaimSource

        return RedisClaimSource(client, self.id, self.queues, self.counters, postgres, self._pool)

    def _pool(self) -> ConnectionPool:
        return self.queue.pool

    def _seconds_until_due(self) -> float | None:
        """Seconds until the earliest queued or retrying job of this worker's queues is due."""
        with translated(self.settings.database_url), self._pool().connection() as conn:
            return self.queries.seconds_until_due(conn, self.queues)

    def _holds_nothing(self) -> bool:
        """True when the runner holds no job (buffered or running): no outcome is coming soon."""
        return self._runner.count() == 0

    def _job_state(self, job_id: int) -> int:
        """What the runner says of a job (``positions.WAITING``, ``RUNNING`` or ``GONE``), read
        without the runner's lock: a slot only goes from waiting to started to reported."""
        slot = self._runner.in_flight.get(job_id)
        if slot is None or slot.reported:
            return GONE
        return RUNNING if slot.started else WAITING

    def __repr__(self) -> str:
        return f"<pgq.Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    # ------------------------------------------------------------ public
    def run(self, *, burst: bool = False) -> None:
        """Run until stopped (SIGTERM/SIGINT, ``stop()``, or a drain asked in the database:
        ``pgq.drain_worker``, ``pgq workers drain``); with ``burst``, until no job is left.

        First waits for an unreachable database, up to ``Settings.start_timeout_seconds``
        (``stop()`` meanwhile returns at once, ``started`` staying false).

        A burst run ends once it holds no job, every outcome it produced is
        written, and none of its queues has a queued or retrying job due now or
        within ``Settings.burst_wait_seconds`` (``PGQ_BURST_WAIT_SECONDS``, 60):
        the retries of the jobs it failed run before it returns, a job delayed
        further is left for later. Jobs other workers run are not waited for.

        On exit every claimed job has been reported, released or (after the grace
        period) interrupted, and the worker is deregistered.

        Raises:
            DatabaseUnavailable: the database did not answer within the start timeout.
            ConfigurationError: the URL or the login is wrong.
            TooManyStuckHandlers: ``max_stuck_handlers`` sync handlers ran on past
                their timeout; the worker drained first (their threads cannot be
                killed: end the process, a supervisor starts a fresh one).
        """
        if not self._registered and not self._wait_for_database():
            return
        self.started = True
        restore = self._install_signals() if self.install_signal_handlers else None
        try:
            self._serve_metrics()
            self._start_background()
            self._runner.start()
            self._claims.run(burst)
        finally:
            try:
                self._shutdown()
            finally:
                if restore:
                    restore()
        if self._runner.too_many_stuck:
            raise TooManyStuckHandlers(self._runner.max_stuck, self._runner.stuck)

    def _wait_for_database(self) -> bool:
        """Wait for the database (``pgq.db.wait_for_database``); False when stopped meanwhile."""

        def pause(seconds: float) -> None:
            if self._stopping.wait(seconds):
                raise _Stopped

        try:
            wait_for_database(self.settings.require_database_url(),
                              timeout_seconds=self.settings.start_timeout_seconds, clock=self.clock, sleep=pause)
        except _Stopped:
            log.info("worker %s stopped while waiting for the database", self.id)
            return False
        return True

    def run_once(self, max_jobs: int | None = None) -> int:
        """Claim one batch, run it to the end, write the outcomes; return how many ran.

        For tests and embedding: no background threads, no waiting for work.
        """
        self._register()
        self._serve_metrics()
        self._runner.start()
        self._runner.refill_at = ALWAYS
        jobs = self._claims.claim(min(max_jobs or self._claims.current_batch(), self.concurrency), thorough=True)
        self._claims.hand_over(jobs)
        while True:
            self._runner.enforce_deadlines()
            if not self._runner.unreported():
                break
            self._claims.wait(0.05)
            self._wake.clear()
        self._acknowledger.flush_all()
        return len(jobs)

    def close(self) -> None:
        """End what ``run_once()`` started: stop the runner's threads and event loop, and
        deregister the worker. ``run()`` does this itself on return; the worker claims
        nothing afterwards."""
        self._stopping.set()
        self._shutdown()

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; let running jobs finish (``now``: skip the grace period)."""
        self._stopping.set()
        if now:
            self._force.set()
        self._wake.set()

    def _drain(self, how: str) -> None:
        """The database asked this worker to drain: stop as ``stop()`` does."""
        if self.drained_by is None:
            self.drained_by = how
            log.info("worker %s asked to drain (%s): claiming no more; finishing running jobs, releasing "
                     "the others, then deregistering", self.id, how)
        self.stop()

    def evacuate(self, reason: str) -> None:
        """Evacuate this worker: record it (``pgq.evacuate_worker``, by 'worker'), then drain.

        Called by the heartbeat when the worker's own samples say so
        (``EvacuationPolicy``). Claims nothing more; ``run()`` releases the unstarted
        jobs, lets the running ones finish within ``evacuation_grace_seconds``, gives
        back the rest and deregisters. A database that cannot record it does not stop
        the evacuation (the row then shows a plain stop once the worker deregisters).
        """
        if self.evacuation is not None:
            return
        self.evacuation = reason
        log.error("worker %s evacuates itself: %s; handing its jobs back, then exiting for a fresh process",
                  self.id, reason)
        try:
            with translated(self.settings.database_url), self._pool().connection() as conn:
                self.queries.evacuate_worker(conn, self.id, reason, "worker")
        except Exception as exc:  # the drain goes on: the database is not needed to stop claiming
            log.warning("could not record the evacuation of worker %s (%s); evacuating anyway", self.id, exc)
        self._drain(f"evacuated: {reason}")

    def _evacuate_unless_shared(self, reason: str, sample: dict[str, Any]) -> None:
        """The policy says evacuate: do it, unless this worker is not the odd one out.

        A restart helps a worker whose process is unwell, not one whose jobs are, nor a
        fleet with a shared cause (the database, a dependency):
        ``pgq.health.evacuation.weigh_against_peers`` decides, and the policy asks again at
        the next sample. When the figures cannot be read, the worker's own evidence decides.
        """
        try:
            with translated(self.settings.database_url), self._pool().connection() as conn:
                why = weigh_against_peers(conn, self.queries, self.settings, self.id, self.queues, reason=reason,
                                          failed_job_ids=self.counters.failed_jobs.read(), sample=sample)
        except Exception as exc:  # the worker's own evidence decides
            log.warning("could not weigh worker %s against its peers (%s)", self.id, exc)
            why = None
        if why is not None:
            log.warning("worker %s would evacuate (%s), but stays: %s", self.id, reason, why)
            return
        self.evacuate(reason)

    def heartbeat(self) -> None:
        """Send a heartbeat listing the jobs this worker holds (those whose outcome is
        not written yet included); stop handlers of jobs it no longer owns; record the
        number of stuck handlers if it changed."""
        self._heartbeat.run_once()
        self._stuck_report.run_once()

    @property
    def in_flight(self) -> int:
        """Claimed jobs not finished yet (buffered or running)."""
        return self._runner.count()

    @property
    def stuck_handlers(self) -> int:
        """Sync handlers still running past their job's timeout (or after their job was
        cancelled), whose runner threads were replaced."""
        return self._runner.stuck

    def _too_many_stuck(self, stuck: int) -> None:
        log.error("worker %s: %d sync handlers are stuck past their timeout (max_stuck_handlers %d); draining "
                  "and exiting so that a fresh process takes over", self.id, stuck, self._runner.max_stuck)
        self.stop()

    # ------------------------------------------------------------ registration
    def _register(self) -> None:
        if self._registered:
            return
        metadata = json.dumps({"concurrency": self.concurrency, "batch_size": self.batch_size,
                               "tasks": sorted(self.queue.tasks)})
        with translated(self.settings.database_url), self.queue.pool.connection() as conn:
            self.queries.register_worker(conn, self.id, socket.gethostname(), os.getpid(), self.queues,
                                         self.concurrency, metadata)
            register_periodic(conn, self.settings.schema, self.queue.periodic_schedules)  # idempotent
        self._registered = True
        self._source.registered()
        log.info("worker %s registered (queues %s, concurrency %d)", self.id, self.queues, self.concurrency)

    def _reregister(self) -> None:
        self._registered = False
        self._register()

    # ------------------------------------------------------------ background
    def _start_background(self) -> None:
        self._register()
        if self.run_maintenance:
            self.maintenance = Maintenance(self.settings, self.queue.pool, self.queries, redis=self.queue.redis)
            if self.maintenance.reconciler is not None:
                from pgq.redis.reconciler import ReconcilerService

                self._reconciler = ReconcilerService(self.maintenance.reconciler, str(self.id), self.settings,
                                                     self.clock, self.counters)
                self._spawn(lambda: self._run_reconciler(), "pgq-reconcile")
        for target, name in self._source.background(self._wake.set, self._idle, self._stop_background):
            self._spawn(target, name)
        self._spawn(lambda: self._acknowledger.run(self._stop_background), "pgq-ack")
        background = Background(WithStuckReport(self._heartbeat, self._stuck_report), self.maintenance,
                                self.clock, self.counters,
                                beat_every=self.settings.heartbeat_interval_seconds,
                                maintain_every=self.settings.maintenance_interval_seconds)
        self._spawn(lambda: background.run(self._stop_background), "pgq-heartbeat")
        if self.settings.listen:
            url = self.settings.listen_database_url or self.settings.require_database_url()
            self._listener = Listener(
                url,
                [self.queries.channel_job_available, self.queries.channel_job_cancelled,
                 self.queries.channel_worker_draining],
                self._on_notify,
                self._claims.work_announced,
            )
            self._listener.start()

    def _run_reconciler(self) -> None:
        assert self._reconciler is not None
        self._reconciler.run(self._stop_background)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._background.append(thread)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == self.queries.channel_job_available:
            if self._source.wakes_idle_worker:
                # The claim source wakes this worker; a NOTIFY only tells the reconciler
                # to look (jobs enqueued without a push: transactional, SQL, other languages).
                if self._reconciler is not None:
                    self._reconciler.on_job_available()
            elif payload in self.queues:
                self._claims.claim_or_announce()
        elif channel == self.queries.channel_job_cancelled:
            try:
                job_id = int(payload)
            except ValueError:
                return
            self._runner.abandon(job_id, "cancelled")
        elif channel == self.queries.channel_worker_draining and payload == str(self.id):
            self._drain("notification")

    # ------------------------------------------------------------ shutdown
    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                log.warning("second signal: stopping now")
                self.stop(now=True)
            else:
                log.info("signal %s: finishing running jobs (send again to stop now)", signum)
                self.stop()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _shutdown(self) -> None:
        self._stopping.set()
        self._learn_evacuation()
        self._finish_running()
        # Process-isolated handlers still running now are killed before the worker
        # deregisters (which hands their jobs to other workers).
        self._runner.close_processes()
        # Buffered jobs no runner started (none will now) go back to the queue untouched.
        # Until they are released they count as not started: a watermark sent meanwhile
        # (the heartbeat) stays below them, so a crash now gives their attempts back.
        unstarted: list[Slot] = []

        def take() -> list[int]:
            unstarted.extend(self._runner.take_unstarted())
            return [slot.job.id for slot in unstarted]

        self._positions.set_aside(take)
        self._runner.stop_threads()
        self._stop_background.set()
        if self._reconciler is not None:
            self._reconciler.wake()  # the reconciler may be waiting for its next tick
        self._source.interrupt()  # e.g. the Redis waiter may be blocked in BLPOP
        for thread in self._background:
            thread.join(timeout=10)
        self._acknowledger.flush_all()
        if self.memory is not None:
            self.memory.close()
        if self._listener is not None:
            self._listener.stop()
        if self._registered:
            self._report_stuck()
            self._deregister(unstarted)
        # Released and interrupted jobs are runnable again: the source may hand them back.
        self._source.retire()
        self._runner.close_loop()
        self.close_metrics()
        log.info("worker %s stopped: %s", self.id, self.counters)

    def _learn_evacuation(self) -> None:
        """A drain asked in the database may be an operator's evacuation: read its reason."""
        if self.drained_by is None or self.evacuation is not None or not self._registered:
            return
        try:
            with translated(self.settings.database_url), self._pool().connection() as conn:
                self.evacuation = self.queries.evacuation_reason(conn, self.id)
        except Exception as exc:  # then it is drained as asked, with the shutdown's grace period
            log.warning("could not read whether worker %s was evacuated (%s)", self.id, exc)
        if self.evacuation is not None:
            log.error("worker %s was evacuated: %s; handing its jobs back, then exiting", self.id, self.evacuation)

    def _finish_running(self) -> None:
        """Let running jobs finish, for at most ``shutdown_grace_seconds`` (an evacuation:
        ``evacuation_grace_seconds``; not when forced)."""
        grace = self.settings.shutdown_grace_seconds if self.evacuation is None \
            else self.settings.evacuation_grace_seconds
        grace_end = self.clock.monotonic() + grace
        while not self._force.is_set():
            self._runner.enforce_deadlines()
            if not self._runner.unreported(started_only=True) or self.clock.monotonic() >= grace_end:
                break
            self._wake.wait(0.05)
            self._wake.clear()

    def _report_stuck(self) -> None:
        """Leave the number of stuck handlers in the row (they outlive a worker run in-process)."""
        try:
            self._stuck_report.run_once()
        except Exception as exc:
            log.warning("could not record the stuck handlers of worker %s: %s", self.id, exc)

    def _deregister(self, unstarted: list[Slot]) -> None:
        """Release the unstarted jobs, send a last heartbeat (the final watermark), deregister."""
        ids = [slot.job.id for slot in unstarted]
        try:
            if ids:
                with self.queue.pool.connection() as conn:
                    released = self.queries.release_jobs(conn, self.id, ids, [slot.job.attempts for slot in unstarted])
                self.counters.released += len(released)
                self._positions.dispatched(ids)  # released, or no longer this worker's: done with
            self._heartbeat.run_once(final=True)
            with self.queue.pool.connection() as conn:
                interrupted = self.queries.deregister_worker(conn, self.id)
            if interrupted:
                log.warning("%d job(s) were still running at shutdown; they will run again", interrupted)
        except Exception as exc:
            log.error("could not deregister worker %s (%s); maintenance will rescue its jobs", self.id, exc)
        self._registered = False
