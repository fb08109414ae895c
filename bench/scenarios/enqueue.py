"""enqueue: producer speed, one job per transaction and in bulk.

- single: ``q.enqueue()`` in a loop from a warmed queue (one statement and one
  commit per job) -> ``enqueue_single_jobs_per_s``;
- bulk: ``q.enqueue_many()`` of ``--chunk`` jobs per call (one statement and one
  commit per call) -> ``enqueue_bulk_jobs_per_s``.

Compared with the baseline's raw single-row insert loop and raw COPY.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import options
from ..common import Env, Run, envelope, ratio, reset_schema
from ..measure import enqueue_bulk, enqueue_single
from ..report import cost_ratios, cost_text

NAME = "enqueue"
PARAMS = [
    options.jobs(20000, "Jobs enqueued in bulk."),
    options.number("--single", 2000, "Jobs enqueued one per transaction (0 = skip)."),
    options.number("--chunk", 5000, "Jobs per enqueue_many call.", click.IntRange(1)),
]
ALL: list[dict[str, Any]] = [{}]


def run(env: Env, tmp: Path, *, jobs: int, single: int, chunk: int) -> Run:
    reset_schema(env)
    one = enqueue_single(env, single) if single else None
    bulk = enqueue_bulk(env, jobs, chunk=chunk)
    metrics: dict[str, Any] = {
        "enqueue_single_jobs_per_s": one and one["jobs_per_s"],
        "enqueue_bulk_jobs_per_s": bulk["jobs_per_s"],
        "phases": {"single": one, "bulk": bulk},
    }
    base = env.latest("baseline")
    if base:
        phases = base["phases"]
        metrics["vs_baseline"] = {
            "single_vs_insert_commit": ratio(metrics["enqueue_single_jobs_per_s"], base["insert_commit_rows_per_s"]),
            "bulk_vs_copy": ratio(bulk["jobs_per_s"], base["copy_rows_per_s"]),
            "cost_single_vs_insert_commit": cost_ratios(one, phases["insert_commit"]),
            "cost_bulk_vs_copy": cost_ratios(bulk, phases["copy"]),
        }
    return Run(envelope(env, NAME, {"jobs": jobs, "single": single, "chunk": chunk}, metrics))


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    phases = record["phases"]
    vs = record.get("vs_baseline", {})
    out = []
    if phases["single"]:
        out.append(("enqueue, one per transaction", _line(phases["single"], vs.get("single_vs_insert_commit"),
                                                          "raw INSERT+COMMIT")))
    out.append(("enqueue, bulk (enqueue_many)", _line(phases["bulk"], vs.get("bulk_vs_copy"), "raw COPY")))
    return out


def _line(phase: dict[str, Any], fraction: float | None, against: str) -> str:
    text = f"{phase['jobs_per_s']:>10,.0f} jobs/s" + cost_text(phase)
    if fraction is not None:
        text += f"   = {fraction:.0%} of {against}"
    return text
