"""Periodic (cron) jobs: schedules, their ticks, and the leader's service that enqueues them.

A ``Schedule`` is a definition (cron expression, time zone, the job to
enqueue, a catch-up policy), stored in the table ``schedules`` by
``register`` (idempotent: every worker process registers its app's schedules
at start). ``due_ticks`` reads an expression with ``croniter`` (pgq parses no
cron itself) and applies the catch-up policy. ``CronService.run_once`` is the
maintenance leader's part: for each due schedule, one transaction that holds
the leader lock and calls ``pgq.enqueue_schedule_ticks``, which enqueues the
ticks and moves the schedule on together (the guarantees are that function's).
Time is the database's (``now`` parameters pin it in tests).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from croniter import croniter

from pgq.queries import Queries, ScheduleQueries
from pgq.errors import ValidationError
from pgq.job import JobSpec, validate_task_name
from pgq.settings import QUEUE_NAME

log = logging.getLogger("pgq.scheduling")

CatchUp = Literal["skip", "once", "all"]
CATCH_UP_POLICIES = ("skip", "once", "all")
MAX_CATCH_UP_LIMIT = 10000  # the schedules_catch_up_limit_range constraint
# Most due schedules one leader round looks at (the rest wait for the next round).
ROUND_LIMIT = 1000
UTC = dt.UTC


@dataclass(frozen=True)
class Schedule:
    """A periodic schedule: enqueue ``task`` with ``payload`` at every tick of ``cron`` in ``timezone``.

    ``catch_up`` says what happens to ticks missed while no leader ran: ``"skip"``
    (none; the latest runs only if at most ``misfire_grace_seconds`` late),
    ``"once"`` (one job for the latest), ``"all"`` (one job per tick, at most
    ``catch_up_limit``, the latest ones). Construct with ``Schedule.build`` (validates).
    """

    name: str
    cron: str
    task: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    queue: str = "default"
    priority: int = 3
    max_attempts: int = 3
    catch_up: CatchUp = "once"
    catch_up_limit: int = 100
    misfire_grace_seconds: float = 60.0

    @classmethod
    def build(cls, cron: str, task: str, payload: Mapping[str, Any] | None = None, *, name: str | None = None,
              timezone: str = "UTC", queue: str = "default", priority: int = 3, max_attempts: int = 3,
              catch_up: CatchUp = "once", catch_up_limit: int = 100,
              misfire_grace_seconds: float = 60.0) -> Schedule:
        """A validated schedule (``ValidationError`` naming the bad argument otherwise)."""
        validate_task_name(task)
        name = task if name is None else name
        if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
            raise ValidationError(f"schedule name must be 1-100 characters of letters, digits and _ . : - "
                                  f"(starting with a letter or digit), got {name!r}")
        if not isinstance(cron, str) or not 1 <= len(cron) <= 200 or not croniter.is_valid(cron):
            raise ValidationError(f"cron must be a cron expression such as '*/5 * * * *', got {cron!r}")
        zone(timezone)
        if catch_up not in CATCH_UP_POLICIES:
            raise ValidationError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}")
        if isinstance(catch_up_limit, bool) or not isinstance(catch_up_limit, int) \
                or not 1 <= catch_up_limit <= MAX_CATCH_UP_LIMIT:
            raise ValidationError(f"catch_up_limit must be a whole number from 1 to {MAX_CATCH_UP_LIMIT}, "
                                  f"got {catch_up_limit!r}")
        if isinstance(misfire_grace_seconds, bool) or not isinstance(misfire_grace_seconds, (int, float)) \
                or not math.isfinite(misfire_grace_seconds) or misfire_grace_seconds < 0:
            raise ValidationError(f"misfire_grace_seconds must be a finite number >= 0, got {misfire_grace_seconds!r}")
        spec = JobSpec.build(task, payload, queue=queue, priority=priority, max_attempts=max_attempts)
        return cls(name, cron, task, json.loads(spec.payload_json), timezone, spec.queue, spec.priority, spec.max_attempts,
                   catch_up, catch_up_limit, float(misfire_grace_seconds))


def zone(name: object) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (``ValidationError`` for an unknown one)."""
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValidationError(f"timezone must be an IANA time zone such as 'UTC' or 'Europe/Paris', "
                              f"got {name!r}") from None


def next_tick(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first tick of ``cron`` (read in ``timezone``) strictly after ``after``, in UTC."""
    tick: dt.datetime = croniter(cron, after.astimezone(zone(timezone))).get_next(dt.datetime)
    return tick.astimezone(UTC)


def due_ticks(cron: str, timezone: str, catch_up: CatchUp, limit: int, grace_seconds: float,
              due: dt.datetime, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime, dt.datetime]:
    """For a schedule whose next tick ``due`` is <= ``now``: (the ticks to enqueue now, the latest due
    tick, the first tick after ``now``).

    Every tick from ``due`` to the latest one at or before ``now`` is due; the
    catch-up policy picks among them (see ``Schedule``). Cost: at most ``limit``
    croniter steps, however long the downtime.
    """
    after = next_tick(cron, timezone, now)
    tz = zone(timezone)
    latest: dt.datetime = croniter(cron, after.astimezone(tz)).get_prev(dt.datetime).astimezone(UTC)
    latest = max(latest, due)  # a tick edited in by hand need not match the expression
    if catch_up == "once":
        return [latest], latest, after
    if catch_up == "skip":
        return ([latest] if (now - latest).total_seconds() <= grace_seconds else []), latest, after
    ticks = [latest]
    walker = croniter(cron, latest.astimezone(tz))
    while len(ticks) < limit:
        tick = walker.get_prev(dt.datetime).astimezone(UTC)
        if tick < due:
            break
        ticks.append(tick)
    return sorted(ticks), latest, after


@dataclass(frozen=True)
class ScheduleInfo:
    """A stored schedule, as ``pgq schedules`` shows it."""

    name: str
    cron: str
    timezone: str
    task: str
    queue: str
    catch_up: str
    enabled: bool
    next_tick: dt.datetime | None
    last_tick: dt.datetime | None
    last_job_id: int | None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("next_tick", "last_tick"):
            data[key] = None if data[key] is None else data[key].isoformat()
        return data


@dataclass(frozen=True)
class CronReport:
    """What one leader round of the cron service did."""

    leader: bool = True
    enqueued: dict[str, list[int]] = field(default_factory=dict)  # schedule -> job ids
    errors: list[str] = field(default_factory=list)  # schedules whose expression croniter refused


def register(conn: Any, schema: str, schedule: Schedule) -> str:
    """Store ``schedule`` (``pgq.register_schedule``): 'created', 'updated' or 'unchanged'.

    Idempotent: the same definition changes nothing and keeps its ticks. A new or
    changed one starts at its first tick after the database's now (nothing before
    it is caught up). Commits when ``conn`` is in autocommit mode.
    """
    queries = ScheduleQueries(schema)
    now = queries.now(conn)
    s = schedule
    return queries.register(conn, [s.name, s.cron, s.timezone, s.task, json.dumps(dict(s.payload)), s.queue,
                                   s.priority, s.max_attempts, s.catch_up, s.catch_up_limit, s.misfire_grace_seconds,
                                   next_tick(s.cron, s.timezone, now), now])


def list_schedules(conn: Any, schema: str) -> list[ScheduleInfo]:
    """Every stored schedule by name, with its next and last tick."""
    return [ScheduleInfo(*r) for r in ScheduleQueries(schema).list(conn)]


class _Task(Protocol):
    """What ``periodic`` reads of a registered task (``pgq.queue.Task``)."""

    name: str
    queue: str
    priority: int
    max_attempts: int


class _Queue(Protocol):
    """What ``periodic`` needs of a ``pgq.Queue`` (a protocol: this module does not import ``pgq.queue``)."""

    @property
    def periodic_schedules(self) -> dict[str, Schedule]: ...

    @property
    def settings(self) -> Any: ...

    @property
    def task(self) -> Callable[..., Any]: ...  # Queue.task: task(**options) -> decorator

    @property
    def tasks(self) -> dict[str, Any]: ...


def periodic(queue: _Queue, cron: str, /, *, timezone: str = "UTC", name: str | None = None,
             payload: Mapping[str, Any] | None = None, catch_up: CatchUp = "once", catch_up_limit: int = 100,
             misfire_grace_seconds: float = 60.0, **task_options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@queue.periodic(cron, ...)``: register the function as a task named ``name`` (``task_options``
    as ``@queue.task``) and a schedule of the same name, validated now and stored by every worker of
    ``queue`` at start (``register_periodic``). A bad schedule registers nothing."""
    options: dict[str, Any] = {"timezone": timezone, "catch_up": catch_up, "catch_up_limit": catch_up_limit,
                               "misfire_grace_seconds": misfire_grace_seconds}
    Schedule.build(cron, "check", payload, **options)

    def decorate(fn: Callable[..., Any]) -> Any:
        task: _Task = queue.task(name=name, **task_options)(fn)
        try:
            if task.name in queue.periodic_schedules:
                raise ValidationError(f"schedule {task.name!r} is already registered")
            queue.periodic_schedules[task.name] = Schedule.build(
                cron, task.name, payload, queue=task.queue, priority=task.priority, max_attempts=task.max_attempts,
                **options)
        except ValidationError:
            del queue.tasks[task.name]  # e.g. a default task name too long for a schedule
            raise
        return task

    return decorate


def register_periodic(conn: Any, schema: str, schedules: Mapping[str, Schedule]) -> dict[str, str]:
    """Store the ``@periodic`` schedules of a queue (a worker does at start); the outcome per name."""
    return {name: register(conn, schema, s) for name, s in schedules.items()}


class CronService:
    """The maintenance leader's cron part: ``run_once`` enqueues every due tick once.

    Each due schedule is one transaction that takes the leader lock (so only the
    leader of that moment ticks) and calls ``enqueue_schedule_ticks``; a schedule
    another process moved on meanwhile is left alone (the function's guard).
    """

    def __init__(self, schema: str) -> None:
        self.queries = ScheduleQueries(schema)
        self.leader = Queries(schema)

    def run_once(self, conn: Any, now: dt.datetime | None = None) -> CronReport:
        """One round on ``conn`` (a psycopg connection, autocommit). ``now`` pins the time (tests)."""
        now = self.queries.now(conn) if now is None else now
        report = CronReport()
        for name, cron, timezone, catch_up, limit, grace, due in self.queries.due(conn, now, ROUND_LIMIT):
            try:
                if due is None:
                    after = next_tick(cron, timezone, now)
                    ticks: list[dt.datetime] = []
                    latest = now
                else:
                    ticks, latest, after = due_ticks(cron, timezone, catch_up, limit, grace, due, now)
            except (ValueError, KeyError, ValidationError) as exc:  # a DBA's edit croniter cannot read
                log.error("schedule %s: cannot read cron %r in time zone %r (%s); it is not ticked", name, cron,
                          timezone, exc)
                report.errors.append(name)
                continue
            with conn.transaction():
                if not self.leader.try_lead(conn):
                    return CronReport(leader=False, enqueued=report.enqueued, errors=report.errors)
                if due is None:
                    self.queries.set_next(conn, name, after, now)
                    continue
                ids = self.queries.enqueue_ticks(conn, name, due, latest, ticks, after, now)
            if ids is not None:
                report.enqueued[name] = ids
        if report.enqueued:
            log.info("cron: enqueued %d job(s) for %d schedule(s)",
                     sum(len(v) for v in report.enqueued.values()), len(report.enqueued))
        return report

