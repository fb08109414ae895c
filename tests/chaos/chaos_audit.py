"""The audit that ends every chaos scenario: SPEC §1 checked against the database.

Inputs are the ``pgq`` tables and ``chaos.runs`` (one row per handler
execution, written by the handler itself with the database clock). What is
checked, for the ``expected`` logical jobs (payload ``n``) the producer enqueued:

- nothing lost: each logical job exists exactly once and is in a terminal
  status (``completed`` or ``dead``; nothing else is terminal here, since no
  job is cancelled);
- the history is whole: a job's ``job_executions`` rows are attempts 1..attempts,
  one each, so every attempt was closed exactly once (completed, failed, lost,
  interrupted, timed out);
- completion exactly once: a completed job has one ``completed`` execution, a
  dead one none; the stored result is the one returned by the attempt that
  completed (its attempt number and worker);
- the dead letter queue holds exactly the dead jobs, each of which used up
  all its attempts; every job designed to fail is among them;
- no concurrent double execution. A handler execution *holds* its job from
  its start until the earlier of its end and the moment the database closed
  its attempt (a rescue of a dead or stale worker closes it without the
  handler's help). Two executions of one job *overlap* when both held it at
  the same moment; an execution that started after its attempt had been
  closed (a stalled worker that came back) never held the job and is counted
  as ``late``, not as an overlap. At most one live worker holds a job, so the
  number of overlaps must be zero;
- every execution belongs to a claim the database closed, and no two
  executions share a claim (a job is never handed out twice at once). A claim
  is (job, attempt, worker, claimed_at: the claim's ``jobs.started_at``, which
  its ``job_executions`` row keeps): a rescue that gives the attempt back (its
  handler had not started, as far as the worker had reported) closes the claim
  with no execution row and hands the same attempt number out again, possibly
  to the same worker; a run of such a claim counts as closed at the job's next
  claim, and a job has at most ``jobs.free_rescues`` of them. When the same
  worker claimed it again on the same attempt while it still held the first
  copy, that copy settles the new claim (``ClaimLoop.hand_over`` does not start
  a second one): a run settles its own claim, or that later claim (``SETTLED``),
  and no claim is settled by two runs;
- an attempt is charged only once its handler started: every attempt the
  database closed (a ``job_executions`` row) has a handler start on the worker
  that held it, in ``chaos.runs`` or in the workers' start journals
  (``chaos.starts``), unless the job's free rescues were used up (then every
  rescue charges, so that a job that kills its workers still ends dead). The
  reverse is allowed: a handler that started after its worker last reported
  its watermark, and whose worker then died, is given back free (a refund,
  counted in ``jobs.free_rescues``, at most ``max_attempts`` per job).

- a success is never thrown away (issue 9, defect 1): once a handler of a job
  returned, no handler of a later claim of that job starts, unless the attempt that
  returned was closed because its worker died or stalled before writing the
  completion (``lost`` with ``WorkerLost``, ``interrupted``, or given back):
  execution is at-least-once only through a worker's failure. A heartbeat that
  rescues a finished job whose completion is not written yet (``ClaimLost``)
  breaks it.

In Redis mode, ``mirror_leftovers`` adds one check: once the queue is
drained and the workers' mirror reconciler has run, the mirror (ready sets and
popped batches) holds no id of a job Postgres does not call runnable (every
job is terminal by then, so the mirror must be empty of ids).

The report keeps the figures for ``docs/reliability.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgq.redis.keys import Keys

TERMINAL = ("completed", "dead")


@dataclass
class AuditReport:
    expected: int
    jobs: int = 0
    executions: int = 0
    completed: int = 0
    dead: int = 0
    lost: int = 0
    duplicated: int = 0  # overlapping executions + extra completions
    overlaps: int = 0
    late: int = 0  # executions that started or ran on after their attempt was closed
    late_returned: int = 0  # of which the handler returned (its completion must have been refused)
    rescued_attempts: int = 0
    charged_unstarted: int = 0  # attempts charged whose handler never started (must be 0)
    charged_beyond_free_rescues: int = 0  # ... once the job's free rescues were used up (allowed)
    rerun_after_success: int = 0  # jobs run again after a handler returned, its worker alive (must be 0)
    free_rescues: int = 0  # claims given back by a rescue without charging the attempt
    reexecuted: int = 0  # executions beyond the first of jobs not designed to fail
    exhausted_by_faults: int = 0  # jobs not designed to fail that ended dead anyway
    via_redis: int = 0  # executions of jobs claimed from ids popped from Redis
    mirror_stale_at_drain: int | None = None  # Redis mode: non-runnable ids in the mirror when drained
    mirror_clean_after_s: float | None = None  # ... and how long the workers' reconciler took to remove them
    violations: list[str] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "violations"}


def _rows(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _sample(rows: list[tuple[Any, ...]], limit: int = 5) -> str:
    return "; ".join(str(r) for r in rows[:limit]) + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


# The claim each handler start settles (a run in chaos.runs, or a line of a start journal).
# Its own (claimed_at), when the database closed that claim with an execution row. Or, when
# a rescue gave that claim back while the handler ran on, the next claim of the same attempt
# by the same worker with no start of its own: the worker claimed the job again and let the
# copy it still held settle it (ClaimLoop.hand_over). NULL: the claim was given back.
SETTLED = """
    WITH starts AS (
        SELECT job_id, attempt, worker_id, claimed_at FROM chaos.runs
        UNION SELECT job_id, attempt, worker_id, claimed_at FROM chaos.starts
    ), settled AS (
        SELECT s.job_id, s.attempt, s.worker_id, s.claimed_at,
               CASE WHEN EXISTS (SELECT 1 FROM pgq.job_executions e
                                 WHERE e.job_id = s.job_id AND e.attempt = s.attempt AND e.started_at = s.claimed_at
                                   AND e.worker_id IS NOT DISTINCT FROM s.worker_id)
                    THEN s.claimed_at
                    ELSE (SELECT e.started_at FROM pgq.job_executions e
                          WHERE e.job_id = s.job_id AND e.attempt = s.attempt AND e.started_at > s.claimed_at
                            AND e.worker_id IS NOT DISTINCT FROM s.worker_id
                            AND NOT EXISTS (SELECT 1 FROM starts o WHERE o.job_id = e.job_id AND o.attempt = e.attempt
                                                                     AND o.claimed_at = e.started_at))
               END AS settles
        FROM starts s
    )"""


def audit(conn: psycopg.Connection[Any], expected: int) -> AuditReport:
    """Check the invariants over logical jobs ``0 .. expected-1``; return the report."""
    r = AuditReport(expected)
    r.jobs = _one(conn, "SELECT count(*) FROM pgq.jobs")
    r.executions = _one(conn, "SELECT count(*) FROM chaos.runs")
    r.via_redis = _one(conn, "SELECT count(*) FROM chaos.runs WHERE via = 'redis'")

    # ---- nothing lost, one row per logical job, all terminal
    missing = _rows(conn, "SELECT n FROM generate_series(0, %s - 1) AS n"
                          " WHERE NOT EXISTS (SELECT 1 FROM pgq.jobs j WHERE (j.payload->>'n')::int = n)"
                          " ORDER BY n", (expected,))
    r.check(not missing, f"{len(missing)} enqueued job(s) missing from pgq.jobs: {_sample(missing)}")
    twice = _rows(conn, "SELECT payload->>'n', count(*) FROM pgq.jobs GROUP BY 1 HAVING count(*) > 1 ORDER BY 1")
    r.check(not twice, f"{len(twice)} logical job(s) enqueued more than once: {_sample(twice)}")
    unfinished = _rows(conn, "SELECT id, status::text, attempts, worker_id FROM pgq.jobs"
                             " WHERE status::text <> ALL (%s) ORDER BY id", (list(TERMINAL),))
    r.check(not unfinished, f"{len(unfinished)} job(s) not in a terminal status: {_sample(unfinished)}")
    r.lost = len(missing) + len(unfinished)
    r.completed = _one(conn, "SELECT count(*) FROM pgq.jobs WHERE status = 'completed'")
    r.dead = _one(conn, "SELECT count(*) FROM pgq.jobs WHERE status = 'dead'")

    # ---- every attempt closed exactly once, in order
    holes = _rows(conn, """
        SELECT j.id, j.attempts, array_agg(e.attempt ORDER BY e.attempt) AS closed
        FROM pgq.jobs j LEFT JOIN pgq.job_executions e ON e.job_id = j.id
        GROUP BY j.id, j.attempts
        HAVING array_agg(e.attempt ORDER BY e.attempt) FILTER (WHERE e.attempt IS NOT NULL)
               IS DISTINCT FROM ARRAY(SELECT generate_series(1, j.attempts))
        ORDER BY j.id""")
    r.check(not holes, f"{len(holes)} job(s) whose attempts were not each closed exactly once "
                       f"(job, attempts, closed attempts): {_sample(holes)}")

    # ---- completion exactly once, with the completing attempt's result
    completions = _rows(conn, """
        SELECT j.id, j.status::text, count(e.id) FILTER (WHERE e.outcome = 'completed') AS n
        FROM pgq.jobs j LEFT JOIN pgq.job_executions e ON e.job_id = j.id
        GROUP BY j.id, j.status
        HAVING count(e.id) FILTER (WHERE e.outcome = 'completed') <> (j.status = 'completed')::int
        ORDER BY j.id""")
    r.check(not completions, f"{len(completions)} job(s) completed other than exactly once "
                             f"(job, status, completions): {_sample(completions)}")
    extra = sum(max(0, int(row[2]) - 1) for row in completions)
    wrong_result = _rows(conn, SETTLED + """
        SELECT j.id, j.attempts, j.worker_id, j.result FROM pgq.jobs j
        WHERE j.status = 'completed'
          AND (j.result->>'attempt' IS DISTINCT FROM j.attempts::text
               OR j.result->>'worker' IS DISTINCT FROM j.worker_id::text
               OR NOT EXISTS (SELECT 1 FROM chaos.runs c
                              JOIN settled s ON s.job_id = c.job_id AND s.attempt = c.attempt
                                            AND s.claimed_at = c.claimed_at
                              JOIN pgq.job_executions e ON e.job_id = j.id AND e.attempt = j.attempts
                                                       AND e.started_at = s.settles
                              WHERE c.job_id = j.id AND c.attempt = j.attempts AND c.outcome = 'returned'))
        ORDER BY j.id""")
    r.check(not wrong_result, f"{len(wrong_result)} completed job(s) whose stored result is not the one of the "
                              f"attempt that completed: {_sample(wrong_result)}")

    # ---- the dead letter queue holds exactly the dead jobs, which used up their attempts
    dlq_mismatch = _rows(conn, """
        SELECT coalesce(j.id, d.job_id), j.status::text, d.reason
        FROM (SELECT * FROM pgq.jobs WHERE status = 'dead') j
        FULL JOIN (SELECT * FROM pgq.dead_letter_queue WHERE requeued_at IS NULL) d ON d.job_id = j.id
        WHERE j.id IS NULL OR d.job_id IS NULL ORDER BY 1""")
    r.check(not dlq_mismatch, f"dead_letter_queue differs from the dead jobs (job, status, reason): "
                              f"{_sample(dlq_mismatch)}")
    dlq_twice = _rows(conn, "SELECT job_id, count(*) FROM pgq.dead_letter_queue GROUP BY 1 HAVING count(*) > 1")
    r.check(not dlq_twice, f"job(s) with several dead letters: {_sample(dlq_twice)}")
    not_exhausted = _rows(conn, """
        SELECT j.id, j.attempts, j.max_attempts, d.reason FROM pgq.jobs j
        JOIN pgq.dead_letter_queue d ON d.job_id = j.id
        WHERE j.status = 'dead' AND (d.reason <> 'exhausted' OR j.attempts <> j.max_attempts)
        ORDER BY j.id""")
    r.check(not not_exhausted, f"dead job(s) that had not used up their attempts: {_sample(not_exhausted)}")
    failers_alive = _rows(conn, "SELECT id, status::text FROM pgq.jobs"
                                " WHERE payload->>'kind' = 'fail' AND status <> 'dead' ORDER BY id")
    r.check(not failers_alive, f"job(s) designed to fail that are not dead: {_sample(failers_alive)}")
    r.exhausted_by_faults = _one(conn, "SELECT count(*) FROM pgq.jobs WHERE status = 'dead'"
                                       " AND payload->>'kind' <> 'fail'")

    # ---- executions: one per claim, each claim closed, no two live holders at once.
    # A claim is (job, attempt, worker, claimed_at): a rescue that gives the attempt back
    # (a refund: no execution row, jobs.free_rescues + 1) hands the same attempt number out
    # again, possibly to the same worker; claimed_at (jobs.started_at of the claim, the
    # job_executions.started_at of the attempt it closes) tells the two claims apart.
    shared = _rows(conn, "SELECT job_id, attempt, worker_id, claimed_at, count(*) FROM chaos.runs"
                         " GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 ORDER BY 1, 2")
    r.check(not shared, f"{len(shared)} claim(s) executed more than once (a claim handed out twice): "
                        f"{_sample(shared)}")
    settled_twice = _rows(conn, SETTLED + """
        SELECT c.job_id, c.attempt, s.settles, count(*) FROM chaos.runs c
        JOIN settled s ON s.job_id = c.job_id AND s.attempt = c.attempt AND s.claimed_at = c.claimed_at
                      AND s.worker_id IS NOT DISTINCT FROM c.worker_id
        WHERE s.settles IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1, 2""")
    r.check(not settled_twice, f"{len(settled_twice)} claim(s) settled by more than one run: "
                               f"{_sample(settled_twice)}")
    holds = SETTLED + """, runs AS (
            SELECT c.*, e.finished_at AS closed_at, e.outcome::text AS closed_as, e.error_type AS closed_error,
                   j.free_rescues,
                   -- A run of a claim that was given back: the rescue closed it before the
                   -- job's next claim (the only time known for it), which came before that
                   -- claim's execution row and its run.
                   e.id IS NULL AND j.free_rescues > 0 AS refunded,
                   least((SELECT min(n.started_at) FROM pgq.job_executions n
                          WHERE n.job_id = c.job_id AND n.started_at > c.claimed_at),
                         (SELECT min(n.claimed_at) FROM chaos.runs n
                          WHERE n.job_id = c.job_id AND n.claimed_at > c.claimed_at)) AS next_claim
            FROM chaos.runs c JOIN pgq.jobs j ON j.id = c.job_id
            JOIN settled st ON st.job_id = c.job_id AND st.attempt = c.attempt AND st.claimed_at = c.claimed_at
                           AND st.worker_id IS NOT DISTINCT FROM c.worker_id
            LEFT JOIN pgq.job_executions e
                   ON e.job_id = c.job_id AND e.attempt = c.attempt AND e.started_at = st.settles
        ), held AS (
            SELECT id, job_id, attempt, pid, claimed_at, started_at, ended_at, outcome, refunded, free_rescues,
                   closed_error,
                   CASE WHEN refunded THEN next_claim ELSE closed_at END AS closed_at,
                   CASE WHEN refunded THEN 'refunded' ELSE closed_as END AS closed_as,
                   -- least() ignores NULL: an execution that never ended (its process died)
                   -- held the job until the database closed its claim.
                   least(ended_at, CASE WHEN refunded THEN next_claim ELSE closed_at END) AS held_until
            FROM runs
        )"""
    unclosed = _rows(conn, holds + """
        SELECT job_id, attempt, pid FROM held WHERE closed_as IS NULL ORDER BY 1, 2""")
    r.check(not unclosed, f"{len(unclosed)} execution(s) of a claim the database never closed: "
                          f"{_sample(unclosed)}")
    refunds = _rows(conn, holds + """
        SELECT job_id, count(*), min(free_rescues) FROM held WHERE refunded
        GROUP BY job_id HAVING count(*) > min(free_rescues) ORDER BY 1""")
    r.check(not refunds, f"{len(refunds)} job(s) with more runs of claims given back than free rescues "
                         f"(job, runs, free_rescues): {_sample(refunds)}")
    overlaps = _rows(conn, holds + """
        SELECT a.job_id, a.attempt, a.pid, b.attempt, b.pid, a.started_at, a.held_until, b.started_at
        FROM held a JOIN held b ON b.job_id = a.job_id AND b.id > a.id
        WHERE a.started_at < coalesce(a.held_until, 'infinity') AND b.started_at < coalesce(b.held_until, 'infinity')
          AND a.started_at < coalesce(b.held_until, 'infinity') AND b.started_at < coalesce(a.held_until, 'infinity')
        ORDER BY 1""")
    r.overlaps = len(overlaps)
    r.check(not overlaps, f"{len(overlaps)} pair(s) of executions of one job held it at the same time "
                          f"(job, attempt, pid, attempt, pid, ...): {_sample(overlaps)}")
    r.duplicated = r.overlaps + extra
    late = _rows(conn, holds + """
        SELECT count(*), count(*) FILTER (WHERE outcome = 'returned') FROM held
        WHERE closed_as IN ('lost', 'timed_out', 'interrupted', 'cancelled', 'refunded')
          AND (ended_at IS NULL OR ended_at > closed_at)
          AND (ended_at IS NOT NULL OR started_at > closed_at)""")
    r.late, r.late_returned = int(late[0][0]), int(late[0][1])
    r.rescued_attempts = _one(conn, "SELECT count(*) FROM pgq.job_executions WHERE outcome IN ('lost', 'interrupted')")
    # ---- an attempt is charged only if its handler started (on the worker that held it),
    # or once the job's free rescues are used up (rescue_job's bound)
    unstarted = _rows(conn, SETTLED + """
        SELECT e.job_id, e.attempt, e.outcome::text, e.error_type, j.free_rescues >= j.max_attempts
        FROM pgq.job_executions e JOIN pgq.jobs j ON j.id = e.job_id
        WHERE NOT EXISTS (SELECT 1 FROM settled s WHERE s.job_id = e.job_id AND s.attempt = e.attempt
                                                    AND s.settles = e.started_at)
        ORDER BY 1, 2""")
    charged = [row[:4] for row in unstarted if not row[4]]
    r.charged_beyond_free_rescues = len(unstarted) - len(charged)
    r.charged_unstarted = len(charged)
    r.check(not charged, f"{len(charged)} attempt(s) charged although their handler never started "
                         f"(job, attempt, outcome, error): {_sample(charged)}")
    r.free_rescues = _one(conn, "SELECT coalesce(sum(free_rescues), 0)::int FROM pgq.jobs")
    # ---- a success is never thrown away: after a handler returned, its job runs again only
    # if its worker died (or stalled) before the completion was written
    reruns = _rows(conn, holds + """
        SELECT a.job_id, a.attempt, a.pid, a.ended_at, a.closed_as, a.closed_error, b.attempt, b.pid, b.started_at
        FROM held a JOIN held b ON b.job_id = a.job_id AND b.started_at > a.ended_at
                                -- a late run (a stalled worker starting a job its claim had lost
                                -- before the claim that returned) is not a run again
                                AND b.claimed_at > a.claimed_at
        WHERE a.outcome = 'returned'
          -- closed as failed: the worker reported the handler's exception (here the handler's
          -- recording connection broke after its last write, so it raised): not a success
          AND NOT (a.refunded OR a.closed_as IN ('interrupted', 'failed')
                   OR (a.closed_as = 'lost' AND a.closed_error = 'WorkerLost'))
        ORDER BY 1, 2""")
    r.rerun_after_success = len({row[0] for row in reruns})
    r.check(not reruns, f"{r.rerun_after_success} job(s) ran again after a handler of theirs returned, its worker "
                        f"alive (job, attempt, pid, ended, closed as, error, attempt, pid, started): {_sample(reruns)}")
    r.reexecuted = _one(conn, """
        SELECT coalesce(sum(runs - 1), 0)::int FROM (
            SELECT c.job_id, count(*) AS runs FROM chaos.runs c JOIN pgq.jobs j ON j.id = c.job_id
            WHERE j.payload->>'kind' = 'ok' GROUP BY c.job_id) AS per_job""")
    return r


def mirror_leftovers(conn: psycopg.Connection[Any], client: Any, keys: Keys) -> dict[str, list[tuple[Any, ...]]]:
    """Ids held by the Redis mirror of one deployment (``keys``: ready sets and popped
    batches of every queue) whose job Postgres does not call runnable (terminal, running,
    or no such job): key -> [(id, status)]. ``client`` may be a Redis Cluster client
    (its SCAN visits every primary)."""
    held: dict[str, list[int]] = {}
    for key in client.scan_iter(match=keys.ready("*"), count=1000):
        held[key] = [int(m) for m in client.zrange(key, 0, -1)]
    for key in client.scan_iter(match=keys.popped("*", "*"), count=1000):
        # A popped batch is stored as "<pop time ms> <id> <id> ...".
        held[key] = [int(i) for value in client.hvals(key) for i in value.split()[1:]]
    leftovers = {}
    for key, ids in sorted(held.items()):
        stale = _rows(conn, """
            SELECT i, coalesce(j.status::text, 'no such job') FROM unnest(%s::bigint[]) AS i
            LEFT JOIN pgq.jobs j ON j.id = i
            WHERE j.status IS NULL OR j.status NOT IN ('queued', 'retrying') ORDER BY i""", (ids,))
        if stale:
            leftovers[key] = stale
    return leftovers


def describe_leftovers(leftovers: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """One violation message per mirror key that holds ids of non-runnable jobs."""
    return [f"{key} holds {len(rows)} id(s) of jobs that are not runnable (id, status): {_sample(rows)}"
            for key, rows in leftovers.items()]


def no_live_worker_rows_for_dead_processes(conn: psycopg.Connection[Any], dead_pids: list[int]) -> list[str]:
    """Worker rows still active (or holding running jobs) whose process is gone."""
    rows = _rows(conn, """
        SELECT w.id, w.pid, w.status::text, count(j.id) FILTER (WHERE j.status = 'running')
        FROM pgq.workers w LEFT JOIN pgq.jobs j ON j.worker_id = w.id
        WHERE w.pid = ANY(%s) GROUP BY w.id, w.pid, w.status
        HAVING w.status IN ('active', 'draining') OR count(j.id) FILTER (WHERE j.status = 'running') > 0""",
                 (dead_pids,))
    return [f"worker {row[0]} (pid {row[1]}) is {row[2]} with {row[3]} running job(s) but its process is gone"
            for row in rows]


def recovery_seconds(conn: psycopg.Connection[Any], at: dt.datetime, lifted: dt.datetime,
                     worker_ids: list[Any]) -> float | None:
    """Seconds from ``lifted`` (the fault's end) until work flowed again and every attempt the
    fault orphaned was closed: the later of the first completion after ``lifted`` and the last
    rescue of an attempt of ``worker_ids`` that was open at ``at``. None if nothing completed after it."""
    resumed = _one(conn, "SELECT min(finished_at) FROM pgq.job_executions WHERE outcome = 'completed'"
                         " AND finished_at > %s", (lifted,))
    if resumed is None:
        return None
    rescued = _one(conn, """
        SELECT max(finished_at) FROM pgq.job_executions
        WHERE outcome IN ('lost', 'interrupted', 'timed_out') AND worker_id = ANY(%s)
          AND started_at <= %s AND finished_at >= %s""", (worker_ids, at, at))
    done: dt.datetime = max(resumed, rescued) if rescued is not None else resumed
    return max(0.0, (done - lifted).total_seconds())


def redis_resumed_seconds(conn: psycopg.Connection[Any], lifted: dt.datetime) -> float | None:
    """Seconds from ``lifted`` (a Redis fault's end) until a handler ran a job claimed from
    ids popped from Redis again (None if none did)."""
    again = _one(conn, "SELECT min(started_at) FROM chaos.runs WHERE via = 'redis' AND started_at > %s", (lifted,))
    if again is None:
        return None
    return max(0.0, (again - lifted).total_seconds())
