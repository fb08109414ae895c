"""The ``pgq`` command: migrate, worker, status, workers, dlq, bench, metrics, dashboard.

Thin by design: parse options, build ``Settings``, call one library function,
print, exit. Exit codes: 0 success, 1 failed operation, 2 bad usage or
configuration, 3 gave up waiting for the database (``pgq worker`` at start).
Every option can also come from the environment (``PGQ_…``).

This module holds the root group and its global options; each command group
has a module of its own (``migrate``, ``worker``, ``status``, ``workers``,
``dlq``, ``bench``), and what they share is in ``common``.
"""

from __future__ import annotations

import logging

import click

from pgq.cli import bench, dashboard, dlq, metrics, migrate, status, worker, workers
from pgq.cli.common import Context, format_table, handle_errors
from pgq.cli.scheduling import commands as scheduling_commands
from pgq.health.cli import commands as health_commands
from pgq.memory import cli as memory_commands
from pgq.snapshots.cli import snapshot

__all__ = ["main"]


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


main.add_command(migrate.migrate)
main.add_command(worker.worker)
main.add_command(status.status)
main.add_command(workers.workers)
main.add_command(dlq.dlq)
main.add_command(bench.bench)
# Prometheus (issue 11): pgq metrics (pgq/cli/metrics.py); workers: pgq worker --metrics-port.
main.add_command(metrics.metrics)
# The web dashboard (issue 13): pgq dashboard (pgq/cli/dashboard.py, pgq/dashboard/).
main.add_command(dashboard.dashboard)

# Worker health (issue 11): `pgq health`, `pgq workers health` (pgq/health/cli.py).
for _command, _group in zip(health_commands(handle_errors), (main, workers.workers), strict=True):
    _group.add_command(_command)

# Scheduling (issue 10): pgq queue pause|resume|paused, pgq schedules (pgq/cli/scheduling.py).
for _command in scheduling_commands(handle_errors, format_table):
    main.add_command(_command)

# State snapshots (issue 12): pgq snapshot ... (pgq/snapshots/cli.py).
main.add_command(snapshot)

# Execution memory (issue 12): pgq similar, pgq dlq clusters (pgq/memory/cli.py).
memory_commands.add_commands(main, dlq.dlq, handle_errors)
