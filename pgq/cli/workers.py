"""``pgq workers``: list registered workers; ``pgq workers drain ID`` drains one, ``evacuate ID`` evacuates one."""

from __future__ import annotations

import uuid

import click

from pgq.cli.common import Context, format_age, format_json, format_table, handle_errors
from pgq.health.cli import analysed, trend_columns
from pgq.queue import Queue


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Include stopped workers.")
@click.pass_context
@handle_errors
def workers(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """Registered workers: load, stuck handlers, health score, trend, anomalies, predicted failure, heartbeat age.

    `pgq workers health` shows the analysis in full; `pgq workers drain|evacuate ID` acts on one.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    with obj.queue() as queue:
        rows = [w for w in queue.stats().workers if show_all or w.status != "stopped"]
        health = analysed(queue) if rows else {}
    if as_json:
        click.echo(format_json([{**w.__dict__, "id": str(w.id),
                                 "health": health[w.id].as_dict() if w.id in health else None} for w in rows]))
        return
    click.echo(format_table(
        ["id", "host", "pid", "status", "queues", "running", "capacity", "stuck", "score", "trend", "anomalies",
         "fails in", "heartbeat"],
        [(str(w.id)[:8], w.hostname, w.pid, w.status, ",".join(w.queues), w.running_jobs, w.capacity,
          w.stuck_handlers, f"{w.health_score:.2f}", *trend_columns(health.get(w.id)),
          format_age(w.heartbeat_age_seconds)) for w in rows],
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


@workers.command("evacuate")
@click.argument("worker_id")
@click.option("--reason", default="evacuated by an operator", show_default=True,
              help="Why (recorded in workers.evacuation_reason).")
@click.pass_obj
@handle_errors
def workers_evacuate(obj: Context, worker_id: str, reason: str) -> None:
    """Evacuate worker WORKER_ID (its id, or the start of it as `pgq workers` shows).

    As `drain`, but running jobs get PGQ_EVACUATION_GRACE_SECONDS, then are given
    back, and the process exits with code 75 for its supervisor to start a fresh one.
    """
    with obj.queue() as queue:
        target = _worker_id(queue, worker_id)
        done = queue.evacuate_worker(target, reason)
    click.echo(f"worker {target}: " + ("evacuated" if done else "already evacuated"))


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
