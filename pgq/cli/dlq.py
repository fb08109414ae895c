"""``pgq dlq``: list, requeue and purge the dead letter queue."""

from __future__ import annotations

import click

from pgq.cli.common import Context, format_json, format_table, handle_errors


@click.group()
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
        click.echo(format_json([d.__dict__ for d in letters]))
        return
    click.echo(format_table(
        ["job", "queue", "task", "reason", "attempts", "died", "last error"],
        [(d.job_id, d.queue, d.task, d.reason, d.attempts, d.moved_at.isoformat(timespec="seconds"),
          (d.last_error or "")[:80]) for d in letters],
    ) if letters else "dead letter queue is empty")


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1, type=click.IntRange(1))
@click.option("--all", "everything", is_flag=True, help="Requeue every dead job (of --queue).")
@click.option("--queue", "queue_name", help="With --all: only this queue.")
@click.option("--with-dependents", is_flag=True,
              help="Also bring back to waiting the descendants cancelled because of these jobs.")
@click.option("--cluster", type=click.IntRange(1), help="Every dead job of this cluster (`pgq dlq clusters`).")
@click.pass_obj
@handle_errors
def dlq_requeue(obj: Context, job_ids: tuple[int, ...], everything: bool, queue_name: str | None,
                with_dependents: bool, cluster: int | None) -> None:
    """Put dead jobs back in their queue with their attempts reset."""
    if bool(job_ids) + everything + (cluster is not None) != 1:
        raise click.UsageError("give job ids, or --all (not both), or --cluster ID alone")
    with obj.queue() as queue:
        if cluster is not None:
            from pgq.memory.clusters import requeue_cluster

            ids = requeue_cluster(queue, cluster, queue_name=queue_name)
        else:
            ids = queue.requeue_dead(None if everything else list(job_ids), queue=queue_name,
                                     with_dependents=with_dependents)
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
