"""``pgq queue pause|resume|paused|policy|policies|weight`` and ``pgq schedules``: the scheduling commands.

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
        """Pause and resume queues; set their claim rules (limits, rates, fair share, aging)."""

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

    _policy_commands(queue_group, handle_errors, table)

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


def _policy_commands(queue_group: click.Group, handle_errors: Wrap, table: Table) -> None:
    """``pgq queue policy|policies|weight``: a queue's claim rules (``pgq.scheduling.policy``)."""

    @queue_group.command("policy")
    @click.argument("name")
    @click.option("--max-running", type=int, help="At most N of the queue's jobs running at once (all workers).")
    @click.option("--rate-limit", type=int, help="At most N claims per --rate-period (token bucket, burst N).")
    @click.option("--rate-period", type=float, help="Seconds of --rate-limit.")
    @click.option("--group-max-running", type=int, help="At most N running jobs per group (jobs.group_key).")
    @click.option("--group-rate-limit", type=int, help="At most N claims per --group-rate-period, per group.")
    @click.option("--group-rate-period", type=float, help="Seconds of --group-rate-limit.")
    @click.option("--fair-share", is_flag=True, help="Weighted fair share between groups (see `pgq queue weight`).")
    @click.option("--aging-step", type=float, help="Seconds of waiting that raise a job one priority band (to 5).")
    @click.option("--clear", is_flag=True, help="Remove the queue's rules (and its groups' weights).")
    @click.pass_obj
    @handle_errors
    def queue_policy(obj: Any, name: str, clear: bool, **rules: Any) -> None:
        """Set queue NAME's claim rules (replacing its previous ones), or --clear them."""
        with obj.queue() as queue:
            if clear:
                if any(v not in (None, False) for v in rules.values()):
                    raise click.UsageError("--clear takes no rule")
                changed = queue.clear_queue_policy(name)
                click.echo(f"queue {name}: rules removed" if changed else f"queue {name} had no rules")
                return
            queue.set_queue_policy(name, **rules)
        click.echo(f"queue {name}: " + ", ".join(f"{k}={v}" for k, v in rules.items() if v not in (None, False)))

    @queue_group.command("policies")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    @handle_errors
    def queue_policies(obj: Any, as_json: bool) -> None:
        """Queues with claim rules: the rules and their use now (running, tokens left, runnable jobs)."""
        with obj.queue() as queue:
            rows = queue.queue_policies()
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
            return
        click.echo(table(["queue", "running/max", "rate", "tokens", "per group", "fair share", "aging", "runnable"],
                         [(r.queue, f"{r.running}/{_dash(r.max_running)}", _rate(r.rate_limit, r.rate_period),
                           _dash(None if r.tokens is None else round(r.tokens, 1)),
                           _group_rules(r), "yes" if r.fair_share else "no",
                           _dash(None if r.aging_step is None else f"{r.aging_step:g}s"), r.runnable)
                          for r in rows]) if rows else "no queue has claim rules")

    @queue_group.command("weight")
    @click.argument("name")
    @click.argument("group")
    @click.argument("weight", type=float)
    @click.pass_obj
    @handle_errors
    def queue_weight(obj: Any, name: str, group: str, weight: float) -> None:
        """Set GROUP's WEIGHT in queue NAME's fair share (default 1; the queue needs a policy)."""
        with obj.queue() as queue:
            queue.set_group_weight(name, group, weight)
        click.echo(f"queue {name}: group {group!r} weight {weight:g}")


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _rate(limit: int | None, period: float | None) -> str:
    return "-" if limit is None else f"{limit}/{period:g}s"


def _group_rules(row: Any) -> str:
    rules = [f"{row.group_max_running} running"] if row.group_max_running is not None else []
    if row.group_rate_limit is not None:
        rules.append(_rate(row.group_rate_limit, row.group_rate_period))
    return ", ".join(rules) or "-"


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
