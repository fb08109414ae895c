"""Issue 10, periodic (cron) jobs (revision 0010).

Schedules are stored in ``pgq.schedules`` (``register_schedule``, idempotent);
the maintenance leader enqueues each tick with ``enqueue_schedule_ticks``: the
tick's jobs and the schedule's move to the next tick commit together, only
while the schedule still waits for that tick, and each job carries the unique
key of its (schedule, tick). Time is injected (``now``) and every expected tick
is written out by hand. The leader killed mid-tick is a real process killed
with SIGKILL while its tick transaction is blocked half-way (a test trigger
holds it after the job's insert).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import factories
import pgq
from factories import eventually, raises_sqlstate
from pgq.cli import main
from pgq.maintenance import Maintenance
from pgq.scheduling.cron import CronService, Schedule, register
from pgq.testing import QueueClock

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]
UTC = dt.UTC
CRON_PROCESS = Path(__file__).with_name("_cron_proc.py")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def keys(conn: Conn, task: str = "tick") -> list[str]:
    return [r[0] for r in conn.execute("SELECT unique_key FROM pgq.jobs WHERE task = %s ORDER BY id", (task,))]


def schedule_row(conn: Conn, name: str) -> tuple[Any, ...]:
    row = conn.execute("SELECT next_tick, last_tick FROM pgq.schedules WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return tuple(row)


def add(conn: Conn, cron: str, *, next_tick: str | None, name: str = "s", **options: Any) -> None:
    register(conn, "pgq", Schedule.build(cron, "tick", name=name, **options))
    conn.execute("UPDATE pgq.schedules SET next_tick = %s WHERE name = %s",
                 (None if next_tick is None else at(next_tick), name))


# ---------------------------------------------------------------- registration


def test_registering_the_same_schedule_again_changes_nothing_and_keeps_its_ticks(conn: Conn) -> None:
    s = Schedule.build("*/5 * * * *", "tick", {"n": 1}, name="five", queue="cron", priority=4)
    assert register(conn, "pgq", s) == "created"
    conn.execute("UPDATE pgq.schedules SET next_tick = '2026-01-01T00:05Z', last_tick = '2026-01-01T00:00Z'")
    before = conn.execute("SELECT * FROM pgq.schedules").fetchall()
    assert register(conn, "pgq", s) == "unchanged"
    assert register(conn, "pgq", Schedule.build("*/5 * * * *", "tick", {"n": 1}, name="five", queue="cron",
                                                priority=4)) == "unchanged"
    assert conn.execute("SELECT * FROM pgq.schedules").fetchall() == before

    assert register(conn, "pgq", Schedule.build("0 * * * *", "tick", {"n": 1}, name="five")) == "updated"
    row = conn.execute("SELECT cron, queue, priority, next_tick > now(), next_tick <= now() + interval '1 hour',"
                       " extract(minute FROM next_tick AT TIME ZONE 'UTC'), last_tick FROM pgq.schedules").fetchone()
    assert row == ("0 * * * *", "default", 3, True, True, 0, at("2026-01-01T00:00"))


@pytest.mark.parametrize("kwargs, match", [
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "every minute"}, "cron"), ({"cron": ""}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"), ({"timezone": ""}, "timezone"),
    ({"catch_up": "sometimes"}, "catch_up"), ({"catch_up_limit": 0}, "catch_up_limit"),
    ({"catch_up_limit": 10001}, "catch_up_limit"), ({"misfire_grace_seconds": -1}, "misfire_grace"),
    ({"misfire_grace_seconds": float("nan")}, "misfire_grace"), ({"name": "bad name"}, "name must be"),
    ({"name": "x" * 101}, "schedule name"), ({"priority": 6}, "priority"), ({"payload": [1]}, "payload"),
])
def test_a_bad_schedule_is_refused_before_anything_is_written(settings: pgq.Settings, conn: Conn,
                                                              kwargs: dict[str, Any], match: str) -> None:
    args = {"cron": "* * * * *"} | kwargs
    with pgq.connect(settings=settings, strict_tasks=False) as q:
        with pytest.raises(pgq.ValidationError, match=match):
            q.schedule(args.pop("cron"), "tick", **args)
        with pytest.raises(pgq.ValidationError, match=match):
            @q.periodic(kwargs.get("cron", "* * * * *"), **{k: v for k, v in kwargs.items() if k != "cron"})
            def tick() -> None: ...
        assert q.tasks == {} and q.periodic_schedules == {}
    assert conn.execute("SELECT count(*) FROM pgq.schedules").fetchone() == (0,)


def test_register_schedule_in_sql_refuses_bad_values(conn: Conn) -> None:
    with raises_sqlstate("PQ004", match="time zone"):
        conn.execute("SELECT pgq.register_schedule('s', '* * * * *', 'Nowhere/Land', 'tick')")
    with raises_sqlstate("23514", match="schedules_catch_up"):
        conn.execute("SELECT pgq.register_schedule('s', '* * * * *', 'UTC', 'tick', p_catch_up => 'never')")
    assert conn.execute("SELECT count(*) FROM pgq.schedules").fetchone() == (0,)


# ---------------------------------------------------------------- ticking


def test_each_tick_is_enqueued_once_however_often_the_leader_runs(conn: Conn) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05", payload={"n": 7}, queue="cron", priority=4)
    service = CronService("pgq")
    assert service.run_once(conn, now=at("2026-01-01T00:04:59")).enqueued == {}
    first = service.run_once(conn, now=at("2026-01-01T00:05:01")).enqueued["s"]
    assert service.run_once(conn, now=at("2026-01-01T00:05:02")).enqueued == {}
    assert CronService("pgq").run_once(conn, now=at("2026-01-01T00:09:59")).enqueued == {}
    second = service.run_once(conn, now=at("2026-01-01T00:10:00")).enqueued["s"]
    assert keys(conn) == ["pgq.cron:s@2026-01-01T00:05:00Z", "pgq.cron:s@2026-01-01T00:10:00Z"]
    job = factories.job(conn, first[0])
    assert (job["queue"], job["priority"], job["payload"], job["status"]) == ("cron", 4, {"n": 7}, "queued")
    assert len(second) == 1
    assert schedule_row(conn, "s") == (at("2026-01-01T00:15"), at("2026-01-01T00:10"))


@pytest.mark.parametrize("policy, limit, expected", [
    ("all", 100, ["00:10", "00:15", "00:20", "00:25", "00:30"]),
    ("all", 2, ["00:25", "00:30"]),  # bounded: the latest ones
    ("once", 100, ["00:30"]),
    ("skip", 100, []),  # 00:30 is 90 s late, beyond the 60 s grace
])
def test_catch_up_after_downtime(conn: Conn, policy: str, limit: int, expected: list[str]) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:10", catch_up=policy, catch_up_limit=limit)
    CronService("pgq").run_once(conn, now=at("2026-01-01T00:31:30"))
    assert keys(conn) == [f"pgq.cron:s@2026-01-01T{t}:00Z" for t in expected]
    assert schedule_row(conn, "s") == (at("2026-01-01T00:35"), at("2026-01-01T00:30"))


def test_skip_enqueues_a_tick_within_its_grace(conn: Conn) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:10", catch_up="skip", misfire_grace_seconds=60)
    CronService("pgq").run_once(conn, now=at("2026-01-01T00:30:59"))
    assert keys(conn) == ["pgq.cron:s@2026-01-01T00:30:00Z"]


def test_ticks_follow_the_time_zone_across_a_dst_change(conn: Conn) -> None:
    # 09:00 in Paris: 08:00 UTC in winter (CET), 07:00 UTC from 29 March 2026 (CEST).
    add(conn, "0 9 * * *", next_tick="2026-03-28T08:00", timezone="Europe/Paris", catch_up="all")
    service = CronService("pgq")
    service.run_once(conn, now=at("2026-03-28T08:00"))
    assert schedule_row(conn, "s")[0] == at("2026-03-29T07:00")
    service.run_once(conn, now=at("2026-03-29T07:00:05"))
    assert keys(conn) == ["pgq.cron:s@2026-03-28T08:00:00Z", "pgq.cron:s@2026-03-29T07:00:00Z"]


def test_a_schedule_without_next_tick_gets_one_and_catches_nothing_up(conn: Conn) -> None:
    add(conn, "*/5 * * * *", next_tick=None)
    CronService("pgq").run_once(conn, now=at("2026-01-01T00:07"))
    assert keys(conn) == []
    assert schedule_row(conn, "s") == (at("2026-01-01T00:10"), None)


def test_a_disabled_schedule_and_an_unreadable_one_are_not_ticked(conn: Conn) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05", name="off")
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05", name="bad")
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05", name="ok")
    conn.execute("UPDATE pgq.schedules SET enabled = false WHERE name = 'off'")
    conn.execute("UPDATE pgq.schedules SET cron = 'not cron' WHERE name = 'bad'")
    report = CronService("pgq").run_once(conn, now=at("2026-01-01T00:06"))
    assert list(report.enqueued) == ["ok"] and report.errors == ["bad"]


def test_a_tick_of_another_leader_is_not_enqueued_again(connect: Callable[..., Conn]) -> None:
    conn, other = connect(), connect(autocommit=False)
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05")
    # Another process leads (holds the maintenance lock in an open transaction).
    other.execute("SELECT pg_advisory_xact_lock(hashtext('pgq-maintenance:pgq'))")
    assert CronService("pgq").run_once(conn, now=at("2026-01-01T00:06")).leader is False
    assert keys(conn) == []
    # It ticks; a leader that read the schedule before that commit finds it moved on.
    assert other.execute("SELECT pgq.enqueue_schedule_ticks('s', '2026-01-01T00:05Z', '2026-01-01T00:05Z', '{2026-01-01T00:05Z}',"
                         " '2026-01-01T00:10Z', '2026-01-01T00:06Z')").fetchone() != (None,)
    other.commit()
    assert conn.execute("SELECT pgq.enqueue_schedule_ticks('s', '2026-01-01T00:05Z', '2026-01-01T00:05Z', '{2026-01-01T00:05Z}',"
                        " '2026-01-01T00:10Z', '2026-01-01T00:06Z')").fetchone() == (None,)
    assert keys(conn) == ["pgq.cron:s@2026-01-01T00:05:00Z"]


def test_a_tick_at_or_before_last_tick_is_never_enqueued_again(conn: Conn) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05")
    conn.execute("UPDATE pgq.schedules SET last_tick = '2026-01-01T00:05Z'")  # e.g. a DBA set next_tick back
    assert conn.execute("SELECT pgq.enqueue_schedule_ticks('s', '2026-01-01T00:05Z', '2026-01-01T00:05Z', '{2026-01-01T00:05Z}',"
                        " '2026-01-01T00:10Z', '2026-01-01T00:06Z')").fetchone() == ([],)
    assert keys(conn) == []


@pytest.mark.parametrize("ticks, next_tick", [
    ("{2026-01-01T00:10Z,2026-01-01T00:05Z}", "2026-01-01T00:15Z"),  # not ascending
    ("{2026-01-01T00:05Z,2026-01-01T00:05Z}", "2026-01-01T00:15Z"),  # repeated
    ("{2026-01-01T00:07Z}", "2026-01-01T00:15Z"),  # after p_latest_tick and p_now
    ("{2026-01-01T00:00Z}", "2026-01-01T00:15Z"),  # before the due tick
    ("{2026-01-01T00:05Z}", "2026-01-01T00:06Z"),  # next tick not after p_now
])
def test_enqueue_schedule_ticks_refuses_bad_ticks_and_changes_nothing(conn: Conn, ticks: str, next_tick: str) -> None:
    add(conn, "*/5 * * * *", next_tick="2026-01-01T00:05")
    before = factories.snapshot(conn), conn.execute("SELECT * FROM pgq.schedules").fetchall()
    with raises_sqlstate("PQ004"):
        conn.execute("SELECT pgq.enqueue_schedule_ticks('s', '2026-01-01T00:05Z', '2026-01-01T00:05Z', %s, %s,"
                     " '2026-01-01T00:06Z')",
                     (ticks, next_tick))
    assert (factories.snapshot(conn), conn.execute("SELECT * FROM pgq.schedules").fetchall()) == before


# ---------------------------------------------------------------- the leader killed mid-tick


def test_the_leader_killed_mid_tick_causes_neither_a_double_nor_a_gap(db_url: str, connect: Callable[..., Conn]) -> None:
    conn, holder = connect(), connect()
    add(conn, "* * * * *", next_tick="2026-01-01T00:01", catch_up="all")
    conn.execute("CREATE TABLE public.cron_clock (t timestamptz)")
    conn.execute("INSERT INTO public.cron_clock VALUES ('2026-01-01T00:00:30Z')")
    # The tick's job insert waits for advisory lock 777 while the test holds it: the
    # leader is then half-way through its tick transaction (a job inserted, the
    # schedule not moved on, nothing committed).
    conn.execute("""
        CREATE FUNCTION public.hold_tick() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(777); RETURN NEW; END $$;
        CREATE TRIGGER hold_tick BEFORE INSERT ON pgq.jobs FOR EACH ROW EXECUTE FUNCTION public.hold_tick();
    """)
    holder.execute("SELECT pg_advisory_lock(777)")

    def start(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(CRON_PROCESS), db_url, name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    def set_clock(t: str) -> None:
        conn.execute("UPDATE public.cron_clock SET t = %s", (at(t),))
        conn.execute("NOTIFY cron_clock")

    def blocked(name: str) -> bool:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'", (name,)).fetchone() == (1,)

    leader = start("cron-a")
    set_clock("2026-01-01T00:01:05")
    eventually(lambda: blocked("cron-a"), "the leader blocked half-way through its tick")
    follower = start("cron-b")
    procs = [leader, follower]
    try:
        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        holder.execute("SELECT pg_advisory_unlock(777)")
        # The dead leader's transaction rolls back; the other process takes the lead and ticks.
        eventually(lambda: keys(conn) == ["pgq.cron:s@2026-01-01T00:01:00Z"], "the tick enqueued by the follower")
        eventually(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cron-a'")
                   .fetchone() == (0,), "the dead leader's session ended")
        procs.append(start("cron-c"))  # a restarted process competes with the follower from now on
        for minute in (2, 3, 4):
            set_clock(f"2026-01-01T00:0{minute}:01")
            tick = at(f"2026-01-01T00:0{minute}")
            eventually(lambda tick=tick: schedule_row(conn, "s")[1] == tick, f"tick {tick}")
        assert keys(conn) == [f"pgq.cron:s@2026-01-01T00:0{m}:00Z" for m in (1, 2, 3, 4)]
    finally:
        conn.execute("UPDATE public.cron_clock SET t = NULL")
        conn.execute("NOTIFY cron_clock")
        errors = [proc.communicate(timeout=10)[1] for proc in procs]  # waits, and closes the pipes
    assert [p.returncode for p in procs] == [-signal.SIGKILL, 0, 0], errors


def test_two_pgq_worker_processes_the_leader_killed_mid_tick_enqueue_the_tick_once(
        db_url: str, connect: Callable[..., Conn]) -> None:
    # The same, with real `pgq worker` processes: each runs maintenance rounds (the leader
    # lock is taken per round, and again per schedule's tick) on the database's own clock.
    conn, holder = connect(), connect()
    tick = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]  # due now
    # Yearly, its next tick set to this minute: a test that crosses a minute boundary (a slow
    # machine) must not see a second, legitimate tick.
    register(conn, "pgq", Schedule.build("0 0 1 1 *", "tick", name="s", queue="cron", catch_up="all"))
    conn.execute("UPDATE pgq.schedules SET next_tick = %s WHERE name = 's'", (tick,))
    conn.execute("""
        CREATE FUNCTION public.hold_tick() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(777); RETURN NEW; END $$;
        CREATE TRIGGER hold_tick BEFORE INSERT ON pgq.jobs FOR EACH ROW EXECUTE FUNCTION public.hold_tick();
    """)
    holder.execute("SELECT pg_advisory_lock(777)")
    env = os.environ | {"PGQ_DATABASE_URL": db_url, "PGQ_SCHEMA": "pgq", "PGQ_MAINTENANCE_INTERVAL_SECONDS": "0.1",
                        "PGQ_HEARTBEAT_INTERVAL_SECONDS": "0.5", "PGQ_STALE_AFTER_SECONDS": "3",
                        "PYTHONPATH": os.pathsep.join([str(CRON_PROCESS.parent), *sys.path])}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pgq.cli", "worker", "cron_app:queue", "-q", "idle"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def blocked() -> int:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND wait_event = 'advisory' AND datname = current_database()").fetchone()[0]

    def active() -> int:
        return int(conn.execute("SELECT count(*) FROM pgq.workers WHERE status = 'active'").fetchone()[0])

    leader = start()
    eventually(lambda: blocked() == 1, "the first worker's maintenance blocked half-way through its tick", 90.0)
    follower = start()
    procs = [leader, follower]
    try:
        eventually(lambda: active() == 2, "the second worker registered", 90.0)
        assert blocked() == 1  # the follower's rounds do not get the leader lock
        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        holder.execute("SELECT pg_advisory_unlock(777)")
        eventually(lambda: keys(conn) == [f"pgq.cron:s@{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"],
                   "the tick enqueued by the follower", 90.0)
        procs.append(start())  # a restarted process competes with the follower from now on
        # The killed leader is found stale by a maintenance round (the new leader's), and the
        # restarted process registers: rounds of both go on, and the tick stays enqueued once.
        eventually(lambda: conn.execute("SELECT array_agg(status::text ORDER BY started_at) FROM pgq.workers")
                   .fetchone()[0] == ["stale", "active", "active"], "the dead leader stale, two workers active", 90.0)
        assert len(keys(conn)) == 1
        next_tick, last_tick = schedule_row(conn, "s")
        assert last_tick == tick and next_tick == dt.datetime(tick.astimezone(UTC).year + 1, 1, 1, tzinfo=UTC)
    finally:
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        errors = [proc.communicate(timeout=30)[1] for proc in procs]
    assert [p.returncode for p in procs] == [-signal.SIGKILL, 0, 0], errors


# ---------------------------------------------------------------- API, maintenance, CLI


def test_periodic_tasks_are_stored_by_the_worker_and_ticked_by_the_maintenance_leader(
    settings: pgq.Settings, conn: Conn, monkeypatch: pytest.MonkeyPatch, db_url: str,
) -> None:
    with pgq.connect(settings=settings) as q:
        @q.periodic("*/5 * * * *", timezone="Europe/Paris", payload={"n": 1}, name="report-5", queue="reports")
        def report(n: int) -> None: ...

        assert report.name == "report-5"

        assert q.schedule("0 3 * * *", "cleanup", catch_up="skip") == "created"
        worker = q.worker(queues=["reports"], install_signal_handlers=False, run_maintenance=False)
        worker.run_once()  # registers the worker and its app's schedules
        assert [(s.name, s.cron, s.timezone, s.task, s.queue) for s in q.schedules()] == [
            ("cleanup", "0 3 * * *", "UTC", "cleanup", "default"),
            ("report-5", "*/5 * * * *", "Europe/Paris", "report-5", "reports")]
        assert QueueClock(q).advance_to_next_tick("report-5") <= dt.timedelta(minutes=5)
        assert Maintenance(q.settings, q.pool).run_once().cron.enqueued.keys() == {"report-5"}  # type: ignore[union-attr]
        assert worker.run_once() == 1

    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    listed = json.loads(CliRunner().invoke(main, ["schedules", "--json"]).output)
    assert [(s["name"], s["last_job_id"] is not None) for s in listed] == [("cleanup", False), ("report-5", True)]
    table = CliRunner().invoke(main, ["schedules"]).output
    assert "report-5" in table and "Europe/Paris" in table and "next tick" in table
