"""What every scenario shares: the database under test, the bench schema, the
record envelope (settings, versions, Postgres settings, machine), percentiles,
clock alignment with the server and the progress bar.

A scenario returns ``Run`` objects: ``record`` is the JSON-ready result printed
with ``--json``; ``series`` holds raw samples (latencies, timelines) that only
the plot needs and that are too large for the record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import psycopg

import pgq
from pgq import migrate
from pgq.db import connect, driver_url, quote_ident

from .names import APP_METER, APP_PREFIX, SCHEMA


@dataclass
class Run:
    """One scenario run: the JSON record, and raw samples for the plot."""

    record: dict[str, Any]
    series: dict[str, Any] = field(default_factory=dict)


class CountingConnection(psycopg.Connection[Any]):
    """A connection that counts its statements (each one a transaction in autocommit), so that
    the bench's own reads can be taken out of the commit counts it reports."""

    statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return super().execute(*args, **kwargs)


@dataclass
class Env:
    """The database under test, and what the scenarios of one invocation learned."""

    url: str
    embedded: bool
    progress: bool
    server: Any = None
    results: list[dict[str, Any]] = field(default_factory=list)  # records of this invocation, in order
    _meter: CountingConnection | None = None

    def latest(self, scenario: str, **settings: Any) -> dict[str, Any] | None:
        """The last record of ``scenario`` in this invocation whose settings match ``settings``."""
        record: dict[str, Any]
        for record in reversed(self.results):
            if record["scenario"] == scenario and all(record["settings"].get(k) == v for k, v in settings.items()):
                return record
        return None

    def settings(self, **overrides: Any) -> pgq.Settings:
        return pgq.Settings(database_url=self.url, schema=SCHEMA, **overrides)

    @property
    def conn(self) -> CountingConnection:
        """The parent's own autocommit connection (stats, reads, setup); never used by a child."""
        if self._meter is None or self._meter.closed:
            connect(self.url).close()  # a wrong URL fails here, with pgq's clear message
            self._meter = CountingConnection.connect(driver_url(self.url), autocommit=True,
                                                     application_name=APP_METER)
        return self._meter

    def close(self) -> None:
        if self._meter is not None:
            self._meter.close()
        if self.server is not None:
            self.server.cleanup()

    def say(self, message: str) -> None:
        if self.progress:
            click.echo(message, err=True)


def open_env(database_url: str | None, *, progress: bool) -> Env:
    """The configured database, or an embedded PostgreSQL when there is none."""
    if database_url is not None:
        return Env(database_url, embedded=False, progress=progress)
    from .embedded import start_embedded

    if progress:
        click.echo("no PGQ_DATABASE_URL: starting an embedded PostgreSQL (first run takes a few seconds)", err=True)
    url, server = start_embedded()
    return Env(url, embedded=True, progress=progress, server=server)


@contextlib.contextmanager
def app_name(name: str) -> Iterator[None]:
    """Tag connections opened inside the block (libpq reads PGAPPNAME) as ``name``."""
    before = os.environ.get("PGAPPNAME")
    os.environ["PGAPPNAME"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PGAPPNAME", None)
        else:
            os.environ["PGAPPNAME"] = before


# ---------------------------------------------------------------- schema
def reset_schema(env: Env) -> None:
    """Drop the bench schema and migrate it again: every run starts empty."""
    env.conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(SCHEMA)} CASCADE")
    migrate.upgrade(env.settings())


def empty_tables(env: Env) -> None:
    """Empty pgq's tables in the bench schema (between sub-runs of one scenario)."""
    tables = ", ".join(f"{quote_ident(SCHEMA)}.{t}" for t in queue_tables(env))
    env.conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def queue_tables(env: Env) -> list[str]:
    """pgq's tables in the bench schema (whatever the current migration made)."""
    rows = env.conn.execute(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = %s AND relname <> 'alembic_version'"
        " ORDER BY relname", (SCHEMA,)).fetchall()
    return [r[0] for r in rows]


def settle(env: Env, *, closed: bool = True, timeout: float = 10.0) -> None:
    """Wait until the statistics of the phase that just ended have landed.

    A backend reports its transaction and table counters to the shared
    statistics when it exits, or when idle and at most once a second. Measured
    phases therefore end with their connections closed: with ``closed`` this
    waits until no other bench connection is left, then until the commit
    counter stops moving.
    """
    deadline = time.monotonic() + timeout
    while closed and time.monotonic() < deadline:
        (others,) = env.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE %s AND pid <> pg_backend_pid()", (APP_PREFIX + "%",)).fetchone()
        if others == 0:
            break
        time.sleep(0.02)  # waiting for backends to exit
    previous = None
    while time.monotonic() < deadline:
        (commits,) = env.conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        if previous is not None and commits - previous <= 2:  # only this loop's own statements
            return
        previous = commits
        time.sleep(0.1)  # waiting for the counters to stop moving


# ---------------------------------------------------------------- clocks
def clock_offset(env: Env, samples: int = 7) -> tuple[float, float]:
    """Server clock minus this machine's ``time.time()``, in seconds, and its uncertainty.

    Taken from the round trip with the smallest duration (the offset is known
    to within half of it). On the same machine it is ~0; on another host it
    corrects the server timestamps (``finished_at``) compared with client ones.
    """
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.time()
        (server,) = env.conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.time()
        half = (after - before) / 2
        if best is None or half < best[1]:
            best = (server - (before + after) / 2, half)
    assert best is not None
    return best


# ---------------------------------------------------------------- numbers
def percentiles(values: Sequence[float] | np.ndarray, digits: int = 2) -> dict[str, float | None]:
    """p50/p95/p99/max (and the sample count) of ``values``, rounded."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"n": int(arr.size), "p50": round(float(p50), digits), "p95": round(float(p95), digits),
            "p99": round(float(p99), digits), "max": round(float(arr.max()), digits)}


def rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


# ---------------------------------------------------------------- the record envelope
def machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cores": os.cpu_count(), "memory_gib": round(pages / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version()}


def postgres_settings(env: Env) -> dict[str, Any]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_connections")
    settings: dict[str, Any] = {n: env.conn.execute(f"SHOW {n}").fetchone()[0] for n in names}
    settings["embedded"] = env.embedded
    return settings


def versions() -> dict[str, Any]:
    return {"pgq": pgq.__version__, "psycopg": psycopg.__version__, "pgq_commit": _git_commit()}


def _git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when modified), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def envelope(env: Env, scenario: str, settings: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The record of one scenario run: what ran, where, and what it measured."""
    return {
        "bench": "pgq bench",
        "scenario": scenario,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "versions": versions(),
        "postgres": postgres_settings(env),
        "machine": machine(),
        **metrics,
    }


# ---------------------------------------------------------------- progress
class Progress:
    """A progress bar on stderr (nothing when progress is off)."""

    def __init__(self, env: Env, total: int, label: str) -> None:
        self.total = total
        self.shown = 0
        self._bar: Any = None
        if env.progress:
            self._bar = click.progressbar(length=total, label=label, show_eta=False, show_percent=True,
                                          file=sys.stderr)
            self._bar.__enter__()

    def to(self, done: int) -> None:
        done = min(self.total, done)
        if self._bar is not None and done > self.shown:
            self._bar.update(done - self.shown)
        self.shown = max(self.shown, done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
