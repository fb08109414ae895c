"""``pgq queue pause|resume|paused`` and ``pgq schedules``: the scheduling commands.

Thin, as every command: parse, call one library function (``pgq.scheduling``),
print. ``pgq.cli`` registers them with its error handling and table printer
(passed in, so this module does not import ``pgq.cli``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from pgq.scheduling import pause

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
Table = Callable[[Sequence[str], Sequence[Sequence[Any]]], str]


def commands(handle_errors: Wrap, table: Table) -> list[click.Command]:
    """The commands, their pgq errors turned into messages and exit codes by ``handle_errors``."""

    @click.group("queue")
    def queue_group() -> None:
        """Pause and resume queues (claims skip a paused queue's jobs; enqueue still works)."""

    @queue_group.command("pause")
    @click.argument("name")
    @click.pass_obj
    @handle_errors
    def queue_pause(obj: Any, name: str) -> None:
        """Pause queue NAME: no claim that starts from now on takes its jobs."""
        with obj.queue() as queue:
            changed = queue.pause_queue(name)
        click.echo(f"queue {name} paused" if changed else f"queue {name} was already paused")

    @queue_group.command("resume")
    @click.argument("name")
    @click.pass_obj
    @handle_errors
    def queue_resume(obj: Any, name: str) -> None:
        """Resume queue NAME: its jobs are claimed again."""
        with obj.queue() as queue:
            changed = queue.resume_queue(name)
        click.echo(f"queue {name} resumed" if changed else f"queue {name} was not paused")

    @queue_group.command("paused")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    @handle_errors
    def queue_paused(obj: Any, as_json: bool) -> None:
        """The paused queues: since when, by whom, how many jobs wait."""
        with obj.queue() as queue:
            rows = paused_rows(queue)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
            return
        click.echo(paused_table(rows, table) if rows else "no queue is paused")

    @click.command("schedules")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    @handle_errors
    def schedules(obj: Any, as_json: bool) -> None:
        """Periodic schedules: expression, time zone, task, catch-up policy, next and last tick."""
        with obj.queue() as queue:
            rows = queue.schedules()
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
            return
        if not rows:
            click.echo("no schedules")
            return
        click.echo(table(["schedule", "cron", "timezone", "task", "queue", "catch up", "next tick", "last tick"],
                         [(r.name, r.cron, r.timezone, r.task, r.queue, r.catch_up,
                           _when(r.next_tick) if r.enabled else "disabled", _when(r.last_tick)) for r in rows]))

    return [queue_group, schedules]


def _when(value: Any) -> str:
    return "-" if value is None else str(value.isoformat(timespec="seconds"))


def paused_rows(queue: Any) -> list[pause.PausedQueue]:
    """The paused queues, read through ``queue`` (a ``pgq.Queue``)."""
    rows: list[pause.PausedQueue] = queue.paused_queues()
    return rows


def paused_table(rows: Sequence[pause.PausedQueue], table: Table) -> str:
    return table(["paused queue", "since", "by", "application", "waiting jobs"],
                 [(r.queue, r.paused_at.isoformat(timespec="seconds"), r.paused_by, r.paused_by_application,
                   r.waiting_jobs) for r in rows])
