"""``pgq worker APP``: run a worker for an application's ``pgq.Queue``.

Loads the app (``MODULE:ATTRIBUTE``), handles a stop signal that arrives
while it is still starting, runs ``Worker.run`` and maps how it ended to the
exit code. Running jobs is ``pgq.worker``'s.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from pgq.cli.common import EXIT_FAILED, HOW_TO_CONFIGURE, Context, handle_errors
from pgq.errors import TooManyStuckHandlers
from pgq.health.evacuation import EXIT_EVACUATED
from pgq.queue import Queue


def _load_app(spec: str) -> Queue:
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise click.BadParameter("expected MODULE:ATTRIBUTE, e.g. myapp.tasks:queue", param_hint="APP")
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="APP") from None
    if attr:
        target = getattr(module, attr, None)
    else:
        found = [v for v in vars(module).values() if isinstance(v, Queue)]
        target = found[0] if len(found) == 1 else None
    if not isinstance(target, Queue):
        raise click.BadParameter(f"{spec!r} is not a pgq.Queue (name it as MODULE:ATTRIBUTE)", param_hint="APP")
    return target


class _EarlyStop:
    """SIGTERM/SIGINT handling for ``pgq worker`` until the worker installs its own."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.worker: Any = None

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[_EarlyStop]:
        """The handlers while the command runs; the previous ones come back after."""
        early = cls()
        if threading.current_thread() is not threading.main_thread():
            yield early
            return
        previous = {sig: signal.signal(sig, early._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield early
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested.set()
        if self.worker is not None:
            self.worker.stop()  # e.g. while it waits for the database, before its own handlers

    def attach(self, worker: Any) -> bool:
        """Hand a later signal to ``worker``; True if a stop was already requested."""
        self.worker = worker
        return self.requested.is_set()


@click.command()
@click.argument("app")
@click.option("--queues", "-q", help="Comma-separated queues (default: the queues of the app's tasks).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10000), help="Most jobs claimed per round trip.")
@click.option("--burst", is_flag=True,
              help="Exit when no job is left: none held, and none of the queues has a job due now or within "
                   "PGQ_BURST_WAIT_SECONDS (retries due by then are waited for).")
@click.option("--max-stuck-handlers", type=click.IntRange(1, 10000),
              help="Sync handlers stuck past their timeout (threads replaced) at which the worker drains and "
                   "exits with status 1 [default: the concurrency].")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on this port at /metrics (0 = off) [env: PGQ_METRICS_PORT]; "
                   "needs pgq[prometheus].")
@click.pass_obj
@handle_errors
def worker(obj: Context, app: str, queues: str | None, concurrency: int, batch_size: int | None, burst: bool,
           max_stuck_handlers: int | None, metrics_port: int | None) -> None:
    """Run a worker for APP (MODULE:ATTRIBUTE naming a pgq.Queue).

    At start, an unreachable database is waited for (PGQ_START_TIMEOUT_SECONDS;
    exit code 3 when it gives up). SIGTERM or Ctrl-C, or a drain asked in the
    database (`pgq workers drain ID`, `SELECT pgq.drain_worker(id)`): stop
    claiming, release the unstarted jobs, finish the running ones, deregister
    and exit with code 0. A second signal stops at once and puts unfinished
    jobs back in the queue (exit code 1 if handlers were still running). When
    --max-stuck-handlers sync handlers run on past their timeout, the worker
    drains and exits with status 1 (restart it). A worker evacuated (its own
    health score, `pgq workers evacuate ID`, `SELECT pgq.evacuate_worker(id,
    reason)`) drains the same way, gives back what still runs after
    PGQ_EVACUATION_GRACE_SECONDS and exits with code 75: restart it.
    """
    # A supervisor may stop a worker that is still starting (importing the app,
    # waiting for the database): SIGTERM/SIGINT then ends it cleanly (exit 0)
    # instead of killing it, and once the worker exists the signal stops it.
    with _EarlyStop.installed() as early:
        _run_worker(obj, app, queues, concurrency, batch_size, burst, max_stuck_handlers, metrics_port, early)


def _run_worker(obj: Context, app: str, queues: str | None, concurrency: int, batch_size: int | None, burst: bool,
                max_stuck_handlers: int | None, metrics_port: int | None, early: _EarlyStop) -> None:
    # The app builds its Queue at import, usually with pgq.connect(): the global
    # options reach it through the environment (arguments in its code still win).
    if obj.database_url:
        os.environ["PGQ_DATABASE_URL"] = obj.database_url
    if obj.schema:
        os.environ["PGQ_SCHEMA"] = obj.schema
    queue = _load_app(app)
    url = queue.settings.require_database_url(HOW_TO_CONFIGURE)
    if obj.database_url and url != obj.database_url:
        click.echo("warning: the app passes its own database_url to pgq.connect(); --database-url/PGQ_DATABASE_URL "
                   "is not used", err=True)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    w = queue.worker(queues=names, concurrency=concurrency, batch_size=batch_size,
                     max_stuck_handlers=max_stuck_handlers, metrics_port=metrics_port)
    if early.attach(w):
        click.echo("stopped before the worker started", err=True)
        return
    click.echo(f"worker {w.id}: queues {', '.join(w.queues)}, concurrency {concurrency}", err=True)
    # Waits for the database first (exit code 3 when it gives up); a signal meanwhile
    # stops the worker (through ``early``) before it starts.
    try:
        w.run(burst=burst)
    except TooManyStuckHandlers as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        _exit_now(EXIT_FAILED)
    if not w.started:
        click.echo("stopped before the worker started", err=True)
        return
    if w.evacuation is not None:
        # Exit 75 even when handlers still run (given back after the grace period): the
        # supervisor must start a fresh process, whatever this one still holds in memory.
        click.echo(f"worker {w.id}: evacuated ({w.evacuation}); exiting with code {EXIT_EVACUATED} for a "
                   f"fresh process", err=True)
        _exit_now(EXIT_EVACUATED)
    if w.drained_by is not None:
        click.echo(f"worker {w.id}: drained as asked ({w.drained_by})", err=True)
    if w.in_flight:
        # Stopped at once (second signal) while handlers were still running: their
        # jobs are recorded as interrupted and will run again.
        click.echo(f"exiting with {w.in_flight} handler(s) still running; their jobs will run again", err=True)
        _exit_now(EXIT_FAILED)
    if w.stuck_handlers:
        click.echo(f"exiting with {w.stuck_handlers} stuck handler(s) still running (their jobs timed out)",
                   err=True)
        _exit_now(0)


def _exit_now(code: int) -> None:
    """Exit without waiting for threads (a thread cannot be killed: a handler that
    does not return would keep the process alive)."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
