"""``pgq status``: queue depth, workers, the dead letter queue, the Redis mirror.

Prints ``Queue.stats()`` (and, with ``PGQ_REDIS_URL``, ``pgq.redis.health``)
as tables or JSON; the figures are ``pgq.stats``'.
"""

from __future__ import annotations

from typing import Any

import click

from pgq.cli.common import Context, format_age, format_json, format_table, handle_errors
from pgq.cli.scheduling import paused_rows, paused_table


@click.command()
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
        paused = paused_rows(queue)
    if as_json:
        data = stats.to_dict()
        data["paused_queues"] = [p.to_dict() for p in paused]
        if health is not None:
            data["redis_mirror"] = health.to_dict()
        click.echo(format_json(data))
        return
    rows = [(r.queue, r.status, r.priority, r.jobs, r.due, format_age(r.oldest_due_age_seconds)) for r in stats.depth]
    click.echo(format_table(["queue", "status", "priority", "jobs", "due", "oldest due"], rows) if rows else "no jobs")
    if paused:
        click.echo("\n" + paused_table(paused, format_table))
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
        click.echo(f"redis mirror: last pass {format_age(health.seconds_since_pass)} ago, watermark lag "
                   f"{format_age(health.horizon_lag_seconds)}, {health.held_by_workers} id(s) held by workers, "
                   f"{health.heartbeat_keys} worker heartbeat key(s)")
    rows = [(q, in_redis, runnable) for q, (in_redis, runnable) in health.queues.items()]
    if rows:
        click.echo(format_table(["queue", "ids in redis", "runnable in postgres"], rows))
