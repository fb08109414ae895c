"""The worker's heartbeat, and the thread that runs it with the maintenance round.

``Heartbeat.run_once()`` tells Postgres which jobs this worker holds (claimed
and not handed to the runner yet, the runner's buffered or running ones, and
the acknowledger's: finished, outcome not written yet) and its started
watermark (``Positions``). ``heartbeat_worker_v2`` rescues a job the worker
owns but does not list, so a job stays listed until its outcome is committed
or given up. Jobs the database says the worker no longer owns (cancelled,
rescued, timed out) have their handlers stopped; an answer ``draining`` starts
the worker's drain. With health sampling on (``PGQ_HEALTH_SAMPLING``), the
heartbeat also carries the worker's health sample (``pgq.worker.metrics``) in
the same statement (``heartbeat_worker_v3``), and its score goes to the
worker's ``EvacuationPolicy`` (``pgq.health.evacuation``): the claim batch
follows it, and a failing worker evacuates itself. ``Background`` runs the
heartbeat and, when this worker takes part, the maintenance round on their
intervals.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pgq.db import translated
from pgq.errors import ValidationError
from pgq.health.queries import HealthQueries

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgq.clock import Clock
    from pgq.health.evacuation import EvacuationPolicy
    from pgq.queries import Heartbeat as Beat
    from pgq.queries import Queries
    from pgq.worker.acknowledger import Acknowledger
    from pgq.worker.claim import ClaimSource
    from pgq.worker.counters import WorkerCounters
    from pgq.worker.metrics import Mark
    from pgq.worker.positions import Positions
    from pgq.worker.runner import Runner

log = logging.getLogger("pgq.worker")


class Service(Protocol):
    """A periodic job of the worker's background thread."""

    def run_once(self) -> Any: ...


class Heartbeat:
    """One worker's heartbeat (``run_once``: one beat). ``drain`` is called when the
    database answers that the worker is draining; ``evacuate`` (with the reason) when
    ``policy`` says the worker's own samples call for an evacuation (with the latest sample)."""

    def __init__(self, pool: Callable[[], ConnectionPool], queries: Queries, worker_id: uuid.UUID, runner: Runner,
                 acknowledger: Acknowledger, source: ClaimSource, positions: Positions, clock: Clock, *,
                 drain: Callable[[str], None], policy: EvacuationPolicy | None = None,
                 evacuate: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.pool = pool
        self.queries = queries
        self.worker_id = worker_id
        self.runner = runner
        self.acknowledger = acknowledger
        self.source = source
        self.positions = positions
        self.clock = clock
        self._drain = drain
        self.policy = policy
        self._evacuate = evacuate
        # Health samples (issue 11): the measurements the worker's parts record.
        self.metrics = acknowledger.counters.metrics
        self.health_queries = HealthQueries(queries.schema)

    def _abandon(self, job_id: int) -> None:
        self.runner.abandon(job_id, "no longer owned (cancelled, rescued or timed out)")

    def held_ids(self) -> list[int]:
        """The jobs this worker holds: not finished, or finished with the outcome not written.

        Read in the order a job moves through them: the claims' (not handed to the
        runner yet, or set aside for a release), the runner's, the acknowledger's.
        A job enters the next before it leaves one, so it is in one of the lists.
        """
        held = set(self.positions.holding())
        held.update(self.runner.owned_ids())
        held.update(self.acknowledger.pending_ids())
        return sorted(held)

    def run_once(self, *, final: bool = False) -> list[int]:
        """Send a heartbeat; stop the handlers of jobs this worker no longer owns.

        ``final``: the last one before deregistering (the watermark counts every job
        the runner started). Returns the ids of those jobs. Raises what the database raises.
        """
        with self.positions.watching() as claimed_since:
            with self.pool().connection() as conn:
                # The list is taken once the connection is had, just before it is sent: the
                # database rescues an unlisted job claimed more than 10 s before the statement
                # starts, and waiting for a connection of a busy pool may take longer than that.
                held = self.held_ids()
                started_through = self.positions.watermark(final=final)
                sent_at = self.clock.monotonic()
                sample, mark = self._sample_or_none(len(held))
                beat = self._send(conn, len(held), held, started_through, sample)
            if mark is not None:
                self.metrics.committed(mark)
            self.positions.heartbeat_done(sent_at)
            # A lost job claimed again since the heartbeat was sent is this worker's again.
            self.positions.unless_claimed_again(claimed_since, beat.lost_job_ids, self._abandon)
        if beat.previous_status == "stale":
            log.warning("worker %s had been marked stale; its jobs were rescued", self.worker_id)
        if beat.rescued_job_ids:
            log.warning("the database rescued %d job(s) this worker owned but never received (lost claim "
                        "replies): %s", len(beat.rescued_job_ids), beat.rescued_job_ids[:20])
        self.source.heartbeat(len(held))
        if beat.status == "draining":
            self._drain("the heartbeat's answer")
        if sample is not None and not final:
            self._judge(sample)
        return list(beat.lost_job_ids)

    def _judge(self, sample: dict[str, Any]) -> None:
        """Give the sample's score to the policy; evacuate when it says so."""
        if self.policy is None:
            return
        finished = (sample.get("jobs_completed") or 0) + (sample.get("jobs_failed") or 0)
        reason = self.policy.observe(self.clock.monotonic(), sample.get("health_score"), sample.get("rss_bytes"),
                                     finished=int(finished), failed=int(sample.get("jobs_failed") or 0))
        if reason is not None and self._evacuate is not None:
            self._evacuate(reason, sample)

    def _sample_or_none(self, held: int) -> tuple[dict[str, Any] | None, Mark | None]:
        """The sample to send, or none (sampling off, or measuring failed: the heartbeat
        matters more than its sample, so a failure here is logged and the beat goes on)."""
        if not self.metrics.enabled:
            return None, None
        try:
            values, mark = self._sample(held)
        except Exception as exc:  # a heartbeat must never fail because of its sample
            log.warning("health sample not taken: %s", exc)
            return None, None
        return {k: v for k, v in values.items() if v is None or math.isfinite(v)}, mark

    def _send(self, conn: Any, load: int, held: list[int], started_through: int | None,
              sample: dict[str, Any] | None) -> Beat:
        """``heartbeat_worker_v3`` with the sample; a sample the database refuses (a value out of
        range) costs that sample, not the heartbeat: it is sent again without (v2)."""
        if sample is not None:
            try:
                with translated(self.acknowledger.settings.database_url):
                    return self.health_queries.heartbeat_worker_v3(conn, self.worker_id, load, held,
                                                                   started_through, sample)
            except ValidationError as exc:
                log.warning("the database refused this worker's health sample (%s); heartbeat sent without it", exc)
        return self.queries.heartbeat_worker_v2(conn, self.worker_id, load, held, started_through)

    def _sample(self, held: int) -> tuple[dict[str, Any], Mark]:
        """This interval's health sample and score (``held``: the jobs the worker holds).

        The score's latency baseline is the worker's own recent history (see
        ``pgq.health.score.latency_baseline``), taken before this sample joins it.
        """
        from pgq.health.score import latency_baseline, score_sample  # numpy: only when sampling

        counters = self.acknowledger.counters
        with self.runner.lock:
            stuck = self.runner.stuck
        values, mark = self.metrics.sample(now=self.clock.monotonic(), completed=counters.completed,
                                           failed=counters.failed, in_flight=held, capacity=self.runner.concurrency,
                                           stuck=stuck)
        history = self.metrics.p50_history
        baseline = float(latency_baseline(list(history))) if history else None
        values["health_score"] = score_sample(values, baseline, self.acknowledger.settings.health_rss_limit_bytes)
        self.metrics.score = values["health_score"]
        history.append(values.get("latency_p50_ms", float("nan")))
        return values, mark


class Background:
    """Runs the heartbeat every ``beat_every`` seconds and ``maintenance`` (if any) every
    ``maintain_every`` seconds, on one thread, surviving database outages."""

    def __init__(self, heartbeat: Service, maintenance: Service | None, clock: Clock, counters: WorkerCounters,
                 *, beat_every: float, maintain_every: float) -> None:
        self.heartbeat = heartbeat
        self.maintenance = maintenance
        self.clock = clock
        self.counters = counters
        self.beat_every = beat_every
        self.maintain_every = maintain_every

    def run(self, stop: threading.Event) -> None:
        next_beat = self.clock.monotonic() + self.beat_every
        next_maintenance = self.clock.monotonic()
        while not stop.is_set():
            now = self.clock.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + self.beat_every
                    self.heartbeat.run_once()
                if self.maintenance is not None and now >= next_maintenance:
                    next_maintenance = now + self.maintain_every
                    self.maintenance.run_once()
            except Exception as exc:  # the loop must survive database outages
                self.counters.errors += 1
                log.warning("heartbeat/maintenance failed: %s", exc)
            due = min(next_beat, next_maintenance) if self.maintenance is not None else next_beat
            stop.wait(max(0.01, due - self.clock.monotonic()))
