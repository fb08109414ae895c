"""The ``pgq`` command: migrate, worker, status, workers, dlq, bench.

Thin by design: parse options, build ``Settings``, call one library function,
print, exit. Exit codes: 0 success, 1 failed operation, 2 bad usage or
configuration, 3 gave up waiting for the database (``pgq worker`` at start).
Every option can also come from the environment (``PGQ_…``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click

from pgq.memory import cli as memory_commands
from pgq.errors import ConfigurationError, DatabaseUnavailable, PgqError, TooManyStuckHandlers, ValidationError
from pgq.queue import Queue
from pgq.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes (README, "The pgq command").
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DATABASE = 3
# How the CLI is told where the database is (said when none is configured).
HOW_TO_CONFIGURE = "pass --database-url URL (before the command: pgq --database-url URL worker ...)"


class Context:
    def __init__(self, database_url: str | None, schema: str | None) -> None:
        self.database_url = database_url
        self.schema = schema

    def settings(self, *, require_db: bool = True, **overrides: Any) -> Settings:
        settings = Settings.from_env(database_url=self.database_url, schema=self.schema, **overrides)
        if require_db:
            settings.require_database_url(HOW_TO_CONFIGURE)
        return settings

    def queue(self) -> Queue:
        return Queue(self.settings(), strict_tasks=False)


def handle_errors(fn: F) -> F:
    """Turn pgq errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, ValidationError) as exc:
            # Bad configuration or a bad argument (an option's value): bad usage.
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        except DatabaseUnavailable as exc:
            # Not a configuration error: a supervisor should start the process again.
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_NO_DATABASE)
        except PgqError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def _json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
        return str(value)

    return json.dumps(data, default=default, indent=2, sort_keys=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@click.group(context_settings={"auto_envvar_prefix": "PGQ", "help_option_names": ["-h", "--help"]})
@click.option("--database-url", envvar="PGQ_DATABASE_URL", help="PostgreSQL URL [env: PGQ_DATABASE_URL].")
@click.option("--schema", envvar="PGQ_SCHEMA", help="Schema holding pgq's tables [env: PGQ_SCHEMA; default pgq].")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="pgq")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, schema: str | None, verbose: int) -> None:
    """pgq: a job queue in which PostgreSQL is the queue."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(database_url, schema)


# ---------------------------------------------------------------- migrate
@main.command()
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--check", is_flag=True, help="Exit 1 unless the database is at the newest revision.")
@click.option("--to", "revision", default=None, help="Target revision [default: head; with --downgrade, required].")
@click.option("--downgrade", is_flag=True, help="Migrate down to --to (base removes pgq's tables, jobs included).")
@click.option("--drop-roles", is_flag=True,
              help="Drop the cluster-wide roles <schema>_producer and <schema>_worker once nothing uses them.")
@click.option("--yes", is_flag=True, help="With --downgrade: do not ask for confirmation.")
@click.pass_obj
@handle_errors
def migrate(obj: Context, offline: bool, check: bool, revision: str | None, downgrade: bool, drop_roles: bool,
            yes: bool) -> None:
    """Create or upgrade pgq's schema (Alembic); --downgrade and --drop-roles take it away."""
    # Imported here: Alembic and SQLAlchemy would add ~22 MB to every worker process.
    from pgq import migrate as migrations

    if sum((offline, check, downgrade, drop_roles)) > 1:
        raise click.UsageError("--sql, --check, --downgrade and --drop-roles go one at a time")
    if drop_roles:
        if revision is not None:
            raise click.UsageError("--drop-roles takes no --to")
        settings = obj.settings()
        dropped, members = migrations.drop_roles(settings)
        click.echo(f"dropped {', '.join(dropped)}" if dropped else
                   f"no role to drop ({' and '.join(migrations.role_names(settings.schema))} do not exist)")
        for role, member in members:
            click.echo(f"  {member} is no longer a member of {role}")
        return
    if downgrade:
        if revision is None:
            raise click.UsageError("--downgrade needs --to REVISION (base removes everything)")
        settings = obj.settings()
        before = migrations.current_revision(settings)
        if not yes:
            click.confirm(f"Migrate schema {settings.schema!r} down from {before} to {revision}"
                          + (" (deleting every job)" if revision == "base" else "") + "?", abort=True)
        migrations.downgrade(settings, revision)
        click.echo(f"schema {settings.schema!r}: {before} -> {migrations.current_revision(settings) or 'base'}")
        return
    revision = revision or "head"
    if offline:
        click.echo(migrations.upgrade_sql(obj.settings(require_db=False), revision))
        return
    settings = obj.settings()
    if check:
        current, head = migrations.current_revision(settings), migrations.head_revision()
        if current != head:
            click.echo(f"schema {settings.schema!r} is at {current or 'nothing (never migrated)'}, "
                       f"pgq needs {head}; run `pgq migrate`")
            sys.exit(1)
        click.echo(f"schema {settings.schema!r} is at {head} (up to date)")
        return
    before = migrations.current_revision(settings)
    migrations.upgrade(settings, revision)
    after = migrations.current_revision(settings)
    click.echo(f"schema {settings.schema!r}: {before or 'empty'} -> {after}")


# ---------------------------------------------------------------- worker
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


@main.command()
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
@click.pass_obj
@handle_errors
def worker(obj: Context, app: str, queues: str | None, concurrency: int, batch_size: int | None, burst: bool,
           max_stuck_handlers: int | None) -> None:
    """Run a worker for APP (MODULE:ATTRIBUTE naming a pgq.Queue).

    At start, an unreachable database is waited for (PGQ_START_TIMEOUT_SECONDS;
    exit code 3 when it gives up). SIGTERM or Ctrl-C, or a drain asked in the
    database (`pgq workers drain ID`, `SELECT pgq.drain_worker(id)`): stop
    claiming, release the unstarted jobs, finish the running ones, deregister
    and exit with code 0. A second signal stops at once and puts unfinished
    jobs back in the queue (exit code 1 if handlers were still running). When
    --max-stuck-handlers sync handlers run on past their timeout, the worker
    drains and exits with status 1 (restart it).
    """
    # A supervisor may stop a worker that is still starting (importing the app,
    # waiting for the database): SIGTERM/SIGINT then ends it cleanly (exit 0)
    # instead of killing it, and once the worker exists the signal stops it.
    with _EarlyStop.installed() as early:
        _run_worker(obj, app, queues, concurrency, batch_size, burst, max_stuck_handlers, early)


def _run_worker(obj: Context, app: str, queues: str | None, concurrency: int, batch_size: int | None, burst: bool,
                max_stuck_handlers: int | None, early: _EarlyStop) -> None:
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
                     max_stuck_handlers=max_stuck_handlers)
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


# ---------------------------------------------------------------- status
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handle_errors
def status(obj: Context, as_json: bool) -> None:
    """Queue depth by queue x status x priority, oldest waiting age, workers, DLQ size
    (and, with PGQ_REDIS_URL, the health of the Redis mirror)."""
    with obj.queue() as queue:
        stats = queue.stats()
        health = None
        if queue.settings.redis_url is not None:
            from pgq.redis.health import redis_health

            with queue.pool.connection() as conn:
                health = redis_health(queue.settings, conn)
    if as_json:
        data = stats.to_dict()
        if health is not None:
            data["redis_mirror"] = health.to_dict()
        click.echo(_json(data))
        return
    rows = [(r.queue, r.status, r.priority, r.jobs, r.due, _age(r.oldest_due_age_seconds)) for r in stats.depth]
    click.echo(_table(["queue", "status", "priority", "jobs", "due", "oldest due"], rows) if rows else "no jobs")
    live = [w for w in stats.workers if w.status in ("active", "draining")]
    stuck = sum(w.stuck_handlers for w in live)
    click.echo(f"\nworkers: {len(live)} live ({sum(w.running_jobs for w in live)} jobs running"
               f"{f', {stuck} stuck handler(s)' if stuck else ''}), {len(stats.workers) - len(live)} stale/stopped")
    click.echo(f"dead letter queue: {stats.dead_letters} job(s)")
    finished = {k: v for k, v in stats.estimated.items() if k in ("completed", "cancelled")}
    if finished:
        click.echo("finished jobs kept (estimate, as of the last ANALYZE): "
                   + ", ".join(f"~{n:,} {status}" for status, n in sorted(finished.items())))
    if health is not None:
        _echo_redis_health(health)


def _echo_redis_health(health: Any) -> None:
    if not health.reachable:
        click.echo(f"redis mirror: UNREACHABLE ({health.error}); workers use the Postgres path")
        return
    if not health.built:
        click.echo("redis mirror: not built yet (after a flush or restart); workers use the Postgres path "
                   "until the reconciler rebuilds it")
    else:
        click.echo(f"redis mirror: last pass {_age(health.seconds_since_pass)} ago, watermark lag "
                   f"{_age(health.horizon_lag_seconds)}, {health.held_by_workers} id(s) held by workers, "
                   f"{health.heartbeat_keys} worker heartbeat key(s)")
    rows = [(q, in_redis, runnable) for q, (in_redis, runnable) in health.queues.items()]
    if rows:
        click.echo(_table(["queue", "ids in redis", "runnable in postgres"], rows))


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Include stopped workers.")
@click.pass_context
@handle_errors
def workers(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """Registered workers with heartbeat age, load, stuck handlers and health; `pgq workers drain ID` drains one."""
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    with obj.queue() as queue:
        rows = [w for w in queue.stats().workers if show_all or w.status != "stopped"]
    if as_json:
        click.echo(_json([{**w.__dict__, "id": str(w.id)} for w in rows]))
        return
    click.echo(_table(
        ["id", "host", "pid", "status", "queues", "running", "capacity", "stuck", "health", "heartbeat"],
        [(str(w.id)[:8], w.hostname, w.pid, w.status, ",".join(w.queues), w.running_jobs, w.capacity,
          w.stuck_handlers, f"{w.health_score:.2f}", _age(w.heartbeat_age_seconds)) for w in rows],
    ) if rows else "no workers")


@workers.command("drain")
@click.argument("worker_id")
@click.pass_obj
@handle_errors
def workers_drain(obj: Context, worker_id: str) -> None:
    """Ask worker WORKER_ID (its id, or the start of it as `pgq workers` shows) to drain.

    It claims nothing more, releases its unstarted jobs, finishes the running ones
    (within its PGQ_SHUTDOWN_GRACE_SECONDS), deregisters and exits with code 0.
    """
    with obj.queue() as queue:
        target = _worker_id(queue, worker_id)
        asked = queue.drain_worker(target)
    click.echo(f"worker {target}: " + ("asked to drain" if asked else "already draining"))


def _worker_id(queue: Queue, text: str) -> uuid.UUID:
    """A worker id, or the unique start of the id of a worker that is not stopped."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    prefix = text.strip().lower()
    found = [w.id for w in queue.stats().workers if w.status != "stopped" and str(w.id).startswith(prefix)]
    if len(found) != 1 or not prefix:
        raise click.BadParameter(f"{text!r} is not a worker id, nor the start of exactly one live worker's id "
                                 f"({len(found)} match; `pgq workers` lists them)", param_hint="WORKER_ID")
    return found[0]


# ---------------------------------------------------------------- dlq
@main.group()
def dlq() -> None:
    """Inspect, cluster, requeue and purge the dead letter queue."""


@dlq.command("list")
@click.option("--queue", "queue_name", help="Only this queue.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def dlq_list(obj: Context, queue_name: str | None, limit: int, as_json: bool) -> None:
    """Dead jobs, oldest first, with their last error."""
    with obj.queue() as queue:
        letters = queue.dead_letters(queue_name, limit)
    if as_json:
        click.echo(_json([d.__dict__ for d in letters]))
        return
    click.echo(_table(
        ["job", "queue", "task", "reason", "attempts", "died", "last error"],
        [(d.job_id, d.queue, d.task, d.reason, d.attempts, d.moved_at.isoformat(timespec="seconds"),
          (d.last_error or "")[:80]) for d in letters],
    ) if letters else "dead letter queue is empty")


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1, type=click.IntRange(1))
@click.option("--all", "everything", is_flag=True, help="Requeue every dead job (of --queue).")
@click.option("--queue", "queue_name", help="With --all: only this queue.")
@click.option("--cluster", type=click.IntRange(1), help="Every dead job of this cluster (`pgq dlq clusters`).")
@click.pass_obj
@handle_errors
def dlq_requeue(obj: Context, job_ids: tuple[int, ...], everything: bool, queue_name: str | None,
                cluster: int | None) -> None:
    """Put dead jobs back in their queue with their attempts reset."""
    if bool(job_ids) + everything + (cluster is not None) != 1:
        raise click.UsageError("give job ids, or --all (not both), or --cluster ID alone")
    with obj.queue() as queue:
        if cluster is not None:
            from pgq.memory.clusters import requeue_cluster

            ids = requeue_cluster(queue, cluster, queue_name=queue_name)
        else:
            ids = queue.requeue_dead(None if everything else list(job_ids), queue=queue_name)
    click.echo(f"requeued {len(ids)} job(s)" + (f": {', '.join(map(str, ids[:20]))}" if ids else ""))


@dlq.command("purge")
@click.argument("job_ids", nargs=-1, type=click.IntRange(1))
@click.option("--all", "everything", is_flag=True, help="Purge every dead job.")
@click.option("--older-than", type=click.FloatRange(0), default=0, show_default=True,
              help="Only jobs dead for longer than this many seconds.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@handle_errors
def dlq_purge(obj: Context, job_ids: tuple[int, ...], everything: bool, older_than: float, yes: bool) -> None:
    """Delete dead jobs, their dead letters and their history."""
    if bool(job_ids) == everything:
        raise click.UsageError("give job ids, or --all (not both)")
    if not yes:
        click.confirm("Delete these dead jobs for good?", abort=True)
    with obj.queue() as queue:
        ids = queue.purge_dead(None if everything else list(job_ids), older_than=older_than)
    click.echo(f"purged {len(ids)} job(s)")


# ---------------------------------------------------------------- bench
def load_bench() -> Any:
    """Import the bench/ scenarios (shipped in the wheel as pgq/_bench)."""
    name = "pgq._bench"
    if name in sys.modules:
        return sys.modules[name]
    from pgq.sqlfiles import bench_dir

    path = bench_dir()
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _BenchGroup(click.Group):
    """``pgq bench [SCENARIO]``: the scenarios and their options live in bench/ and load on first use.

    Without a scenario it runs the quick bench, whose options are the group's own.
    """

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*load_bench().quick_params(), *super().get_params(ctx)]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(load_bench().commands(handle_errors))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command: click.Command | None = load_bench().commands(handle_errors).get(cmd_name)
        return command


@main.group(cls=_BenchGroup, invoke_without_command=True)
@click.pass_context
@handle_errors
def bench(ctx: click.Context, /, as_json: bool, plot_path: str | None, **params: Any) -> None:
    """Load-test scenarios: pgq against the raw ceilings of its database (and peers).

    `pgq bench` alone runs the quick bench (enqueue N jobs, process them with W
    worker processes, pickup latency); `pgq bench SCENARIO --help` describes a
    scenario, `pgq bench all` runs every one. Each run uses its own schema
    (pgq_bench, recreated), never your queue's; with no database configured an
    embedded PostgreSQL starts.
    """
    if ctx.invoked_subcommand is None:
        load_bench().execute([("quick", params)], ctx.obj.settings(require_db=False).database_url,
                             as_json=as_json, plot_path=plot_path)


# ---------------------------------------------------------------- execution memory (issue 12)
memory_commands.add_commands(main, dlq, handle_errors)


if __name__ == "__main__":  # pragma: no cover
    main()

