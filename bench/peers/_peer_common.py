"""What both peer scripts share: the request, the peer's database, worker processes, figures.

This module runs inside the peers' virtualenv, next to ``pgqueuer_bench.py`` and
``procrastinate_bench.py`` (they import it as a sibling module). It must not
import pgq: only the standard library and psycopg (which procrastinate needs and
the virtualenv therefore has).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKLOADS = ("enqueue", "throughput", "latency")

# Settings every workload understands; each script adds its own peer-specific ones.
COMMON_DEFAULTS: dict[str, Any] = {
    # enqueue
    "single_jobs": 1000,      # one job per transaction
    "bulk_jobs": 20000,       # through the peer's batch API ...
    "bulk_chunk": 5000,       # ... this many jobs per call
    # throughput (burn-down)
    "jobs": 20000,            # pre-loaded no-op jobs
    "workers": 1,             # worker processes
    "concurrency": 16,        # jobs at once per worker process (where the peer has such a knob)
    "analyze": True,          # ANALYZE the peer's tables after pre-loading (see README: fairness)
    # latency
    "latency_jobs": 200,      # jobs enqueued one at a time to idle workers
    "interval_ms": 10.0,      # pause between two of them
    "settle_s": 1.0,          # after releasing the idle workers, before the first job (LISTEN set up)
    # general
    "database": None,         # default pgq_peer_<peer>
    "keep_database": False,   # drop the peer's database at the end (default) or keep it to inspect
    "timeout_s": 900.0,       # give up on a workload after this long
    "progress": False,        # progress lines on stderr
}


# ---------------------------------------------------------------- request / result
def parse_request(peer: str, defaults: dict[str, Any],
                  argv: list[str] | None = None) -> tuple[str, str, dict[str, Any]]:
    """Read (workload, server URL, settings) from the command line or, with --stdin, a JSON object.

    The JSON object is ``{"workload": ..., "url": ..., "settings": {...}}`` (workload
    may also come from argv). Unknown settings are an error, so a typo never runs a
    silently different benchmark.
    """
    parser = argparse.ArgumentParser(
        prog=f"{peer}_bench.py",
        description=f"Run one pgq bench workload through {peer}; print one JSON object on stdout.",
    )
    parser.add_argument("workload", nargs="?", choices=WORKLOADS)
    parser.add_argument("--url", help="admin URL of the PostgreSQL server (default $PGQ_DATABASE_URL or "
                                      f"{DEFAULT_URL}); the peer gets a database of its own there")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting; VALUE is read as JSON when it parses, else as a string (repeatable)")
    parser.add_argument("--settings-json", help="all settings as one JSON object")
    parser.add_argument("--stdin", action="store_true",
                        help='read {"workload", "url", "settings"} as JSON from stdin (how run_peer calls)')
    parser.add_argument("--list-settings", action="store_true", help="print the settings and defaults, then exit")
    args = parser.parse_args(argv)
    if args.list_settings:
        print(json.dumps(defaults, indent=2))
        raise SystemExit(0)

    settings: dict[str, Any] = {}
    workload, url = args.workload, args.url
    if args.stdin:
        request = json.loads(sys.stdin.read() or "{}")
        workload = workload or request.get("workload")
        url = url or request.get("url")
        settings.update(request.get("settings") or {})
    if args.settings_json:
        settings.update(json.loads(args.settings_json))
    for item in args.assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--set wants KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    if workload not in WORKLOADS:
        parser.error(f"workload must be one of {', '.join(WORKLOADS)}")
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        parser.error(f"unknown setting(s) for {peer}: {', '.join(unknown)} (see --list-settings)")
    merged = {**defaults, **settings}
    if merged["database"] is None:
        merged["database"] = f"pgq_peer_{peer}"
    return workload, url or os.environ.get("PGQ_DATABASE_URL") or DEFAULT_URL, merged


_result_stream: Any = None


def claim_stdout() -> None:
    """Keep stdout for the one JSON result: anything else printed (a library's log
    handler, a worker process) goes to stderr instead."""
    global _result_stream
    sys.stdout.flush()
    _result_stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def emit(result: dict[str, Any]) -> None:
    """Print the result: exactly one JSON object, on one line, on (the real) stdout."""
    stream = _result_stream or sys.stdout
    stream.write(json.dumps(result, default=str) + "\n")
    stream.flush()


def log(settings: dict[str, Any], message: str) -> None:
    if settings.get("progress"):
        print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max with linear interpolation (numpy's default), rounded to 0.01 ms."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pct(q: float) -> float:
        pos = (len(ordered) - 1) * q / 100.0
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p50": round(pct(50), 2), "p95": round(pct(95), 2), "p99": round(pct(99), 2),
            "max": round(ordered[-1], 2)}


def machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cores": os.cpu_count(), "memory_gib": round(pages / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


# ---------------------------------------------------------------- the peer's database
def with_database(url: str, dbname: str) -> str:
    """``url`` pointed at another database, as a postgresql:// URL (asyncpg takes no key=value DSN)."""
    params = pg_conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    user = urllib.parse.quote(str(params.pop("user", "") or ""), safe="")
    password = params.pop("password", None)
    host = str(params.pop("host", "") or "")
    port = params.pop("port", None)
    name = urllib.parse.quote(str(params.pop("dbname")), safe="")
    auth = f"{user}:{urllib.parse.quote(str(password), safe='')}@" if password is not None else (
        f"{user}@" if user else "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        params["host"] = host
        host = ""
    netloc = f"{auth}{host}{':' + str(port) if port else ''}"
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items() if v is not None})
    return f"postgresql://{netloc}/{name}{'?' + query if query else ''}"


def server_settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
    return {n: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0]  # type: ignore[index]
            for n in names}


@contextlib.contextmanager
def peer_database(url: str, settings: dict[str, Any]) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """Create the peer's own database (dropped first if a previous run left it); drop it afterwards.

    Yields (URL of the new database, an autocommit admin connection to ``url``).
    """
    dbname = settings["database"]
    admin = psycopg.connect(url, autocommit=True)
    try:
        if admin.info.dbname == dbname:
            raise SystemExit(f"the admin URL must not point at the peer's database {dbname!r}")
        # Two runs of the same peer on one server would drop each other's database:
        # the second waits (a session lock, released if this process dies).
        key = f"pgq-bench-peer:{dbname}"
        if not admin.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:  # type: ignore[index]
            print(f"another run is using database {dbname}; waiting for it to finish", file=sys.stderr, flush=True)
            admin.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        _drop(admin, dbname)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        try:
            yield with_database(url, dbname), admin
        finally:
            if not settings["keep_database"]:
                _drop(admin, dbname)
    finally:
        admin.close()


def analyze(url: str) -> None:
    """ANALYZE the peer's database, as autovacuum would have done to a table that filled up in production.

    Without it, a table loaded a second ago has no statistics and a claim
    query's plan can sort the whole backlog on every claim (procrastinate's
    does: about 40 ms per claim at 20,000 queued jobs).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _drop(admin: psycopg.Connection[Any], dbname: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


class CostMeter:
    """Postgres-side cost of a stretch of work: commits in the peer's database, WAL bytes (server-wide)."""

    def __init__(self, admin: psycopg.Connection[Any], dbname: str) -> None:
        self.admin, self.dbname = admin, dbname
        self.start = self._sample()

    def _sample(self) -> tuple[int, int, dict[str, int]]:
        row = self.admin.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = %s),"
            " pg_current_wal_lsn() - '0/0'::pg_lsn", (self.dbname,)).fetchone()
        assert row is not None
        others = dict(self.admin.execute(
            "SELECT datname, xact_commit FROM pg_stat_database"
            " WHERE datname IS NOT NULL AND datname NOT IN (%s, current_database())", (self.dbname,)).fetchall())
        return int(row[0] or 0), int(row[1]), others

    def elsewhere(self) -> int:
        """Commits in other databases since the start (approximate: statistics are flushed lazily).

        Not zero means someone else shared the server, and its fsyncs, meanwhile.
        """
        now = self._sample()[2]
        return sum(max(0, int(n) - int(self.start[2].get(db, 0))) for db, n in now.items())

    def finish(self, jobs: int, peer_url: str, settle_s: float = 1.0) -> dict[str, Any]:
        # Backends flush their statistics when they exit; give the workers' backends a moment.
        time.sleep(settle_s)
        end = self._sample()
        commits, wal = end[0] - self.start[0], end[1] - self.start[1]
        elsewhere = self.elsewhere()
        with psycopg.connect(peer_url, autocommit=True) as conn:
            dead = conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables").fetchone()[0]  # type: ignore[index]
        per = max(jobs, 1)
        return {"commits": commits, "wal_bytes": wal, "dead_tuples": int(dead),
                "commits_elsewhere_on_server": elsewhere,  # see elsewhere()
                "commits_per_job": round(commits / per, 4), "wal_bytes_per_job": round(wal / per, 1),
                "dead_tuples_per_job": round(int(dead) / per, 3),
                "note": "commits: pg_stat_database of the peer's database; WAL: whole server "
                        "(includes commits_elsewhere_on_server's); "
                        "dead tuples: pg_stat_user_tables after the run (autovacuum may have run)"}


# ---------------------------------------------------------------- worker processes
class Shared:
    """What a forked worker process shares with the parent."""

    def __init__(self, ctx: Any, index: int) -> None:
        self.index = index
        self.ready = ctx.Event()
        self.go: Any = None                      # set by WorkerGroup: one event for all workers
        self.done = ctx.Value("q", 0, lock=False)  # handler calls, written by this process only
        self.results: Any = None                 # multiprocessing.Queue shared by all workers

    def count(self) -> None:
        self.done.value += 1


class WorkerGroup:
    """W forked worker processes: start, wait until each says ready, release them together, join.

    ``target(shared, *args)`` runs in the child; it sets ``shared.ready`` once
    connected and then waits on ``shared.go``. Fork happens while the parent
    holds no event loop, so each child starts its own.
    """

    def __init__(self, n: int, target: Callable[..., None], *args: Any) -> None:
        self.ctx = multiprocessing.get_context("fork")
        self.go = self.ctx.Event()
        self.results = self.ctx.Queue()
        self.shared = []
        for i in range(n):
            s = Shared(self.ctx, i)
            s.go, s.results = self.go, self.results
            self.shared.append(s)
        self.procs = [self.ctx.Process(target=_child, args=(target, s, *args), name=f"peer-worker-{s.index}",
                                       daemon=True) for s in self.shared]

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        if any(p.is_alive() for p in self.procs):
            self.stop(timeout=10.0)

    def start(self, timeout: float = 60.0) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for p in self.procs:
            p.start()
        deadline = time.monotonic() + timeout
        for s, p in zip(self.shared, self.procs, strict=True):
            while not s.ready.wait(0.1):
                if not p.is_alive():
                    raise RuntimeError(f"worker process {s.index} exited with code {p.exitcode} before it was ready")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker process {s.index} not ready within {timeout} s")

    def release(self) -> float:
        t0 = time.perf_counter()
        self.go.set()
        return t0

    def handled(self) -> int:
        return sum(s.done.value for s in self.shared)

    def join(self, timeout: float, total: int | None = None, label: str = "", progress: bool = False) -> None:
        """Wait for every worker process to exit; raise if one fails or time runs out."""
        deadline = time.monotonic() + timeout
        last = 0.0
        while any(p.is_alive() for p in self.procs):
            if time.monotonic() > deadline:
                self.stop(sig=signal.SIGKILL, timeout=5)
                raise RuntimeError(f"{label}: worker processes still running after {timeout} s "
                                   f"({self.handled()} jobs handled)")
            if progress and time.monotonic() - last >= 1.0:
                last = time.monotonic()
                print(f"{label}: {self.handled()}" + (f"/{total}" if total else "") + " jobs handled",
                      file=sys.stderr, flush=True)
            self.procs[0].join(0.05) if self.procs[0].is_alive() else time.sleep(0.05)
        bad = [(p.name, p.exitcode) for p in self.procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"{label}: worker process(es) failed: {bad}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Ask every worker to stop (SIGTERM: the peer's graceful shutdown) and wait for them."""
        for p in self.procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)


def _child(target: Callable[..., None], shared: Shared, *args: Any) -> None:
    # Never let the child run the parent's finalizers (its psycopg admin
    # connection would send a Terminate on the shared socket): leave with _exit.
    code = 0
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler is not ours; the peer installs its own
    try:
        target(shared, *args)
    except BaseException:  # noqa: BLE001 - report anything, then exit non-zero
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            shared.results.close()
            shared.results.join_thread()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def collect(results: Any, expected: int, timeout: float) -> list[Any]:
    """Read ``expected`` items the workers put on the results queue (fewer if time runs out)."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(items) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            items.append(results.get(timeout=min(remaining, 1.0)))
        except Exception:  # queue.Empty
            continue
    return items



# ---------------------------------------------------------------- the script's main
Workload = Callable[[dict[str, Any], str, psycopg.Connection[Any]], dict[str, Any]]


def main(peer: str, defaults: dict[str, Any], workloads: dict[str, Workload],
         describe: Callable[[str, dict[str, Any]], tuple[dict[str, str], dict[str, Any]]],
         prepare: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Parse the request, run one workload in the peer's own database, print one JSON object.

    ``describe(workload, settings)`` returns (versions, config): the exact
    configuration the peer runs with, recorded in the result under "config".
    """
    import datetime as dt

    claim_stdout()

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwind: stop the workers, drop the database

    signal.signal(signal.SIGTERM, terminate)
    workload, url, settings = parse_request(peer, defaults)
    if prepare is not None:
        prepare(settings)
    versions, config = describe(workload, settings)
    started = time.perf_counter()
    with peer_database(url, settings) as (peer_url, admin):
        postgres = server_settings(admin)
        whole_run = CostMeter(admin, settings["database"])
        figures = workloads[workload](settings, peer_url, admin)
        figures["commits_elsewhere_on_server"] = whole_run.elsewhere()
    emit({
        "peer": peer,
        "workload": workload,
        "version": versions.get(peer),
        "versions": versions,
        "config": config,
        "settings": settings,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "postgres": postgres,
        "machine": machine(),
        **figures,
        "wall_seconds": round(time.perf_counter() - started, 2),
    })
    return 0
