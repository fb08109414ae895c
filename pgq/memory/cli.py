"""The memory's commands: ``pgq similar`` and ``pgq dlq clusters``.

``add_commands`` registers them on the ``pgq`` group and its ``dlq`` group;
``pgq.cli`` passes its error handler in (this module does not import
``pgq.cli``: no cycle). Thin: parse, call ``pgq.memory``, print.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from pgq.memory.clusters import DEFAULT_THRESHOLD, dlq_clusters


def _json(data: Any) -> str:
    return json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v), indent=2,
                      sort_keys=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def add_commands(main: click.Group, dlq: click.Group, handle_errors: Callable[[Any], Any]) -> None:
    """Register ``similar`` on ``main`` and ``clusters`` on ``dlq``."""

    @main.command("similar")
    @click.argument("job_id", type=click.IntRange(1), required=False)
    @click.option("--text", help="Search for this error message instead of a job's failure.")
    @click.option("-k", "k", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    @handle_errors
    def similar(obj: Any, job_id: int | None, text: str | None, k: int, as_json: bool) -> None:
        """Past executions most like JOB_ID's failure (or --text), and how their jobs ended."""
        from pgq.memory.search import Memory

        if (job_id is None) == (text is None):
            raise click.UsageError("give a JOB_ID or --text (not both)")
        with obj.queue() as queue, Memory(queue) as memory:
            found = memory.similar(job_id, k) if job_id is not None else memory.similar_text(text or "", k)
        if as_json:
            click.echo(_json([dataclasses.asdict(s) for s in found]))
            return
        click.echo(_table(
            ["score", "job", "attempt", "task", "error", "ended", "finished", "message"],
            [(f"{s.score:.3f}", s.job_id, s.attempt, s.task, s.error_type, s.ended,
              s.finished_at.isoformat(timespec="seconds"), _short(s.message, 60)) for s in found],
        ) if found else "no similar execution in the memory")

    @dlq.command("clusters")
    @click.option("--queue", "queue_name", help="Only this queue.")
    @click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
                  help=f"Cosine similarity to join a cluster (higher: more, tighter clusters) [default: the "
                       f"embedder's; {DEFAULT_THRESHOLD} for lexical].")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with every job id).")
    @click.pass_obj
    @handle_errors
    def clusters(obj: Any, queue_name: str | None, threshold: float | None, as_json: bool) -> None:
        """Group dead jobs by failure: count, a representative message, first and last seen."""
        with obj.queue() as queue:
            found = dlq_clusters(queue, queue_name=queue_name, threshold=threshold)
        if as_json:
            click.echo(_json([dataclasses.asdict(c) for c in found]))
            return
        click.echo(_table(
            ["cluster", "jobs", "task", "error", "first seen", "last seen", "representative message"],
            [(c.id, c.count, ",".join(c.tasks), c.error_type, c.first_seen.isoformat(timespec="seconds"),
              c.last_seen.isoformat(timespec="seconds"), _short(c.representative)) for c in found],
        ) if found else "dead letter queue is empty")
