"""``pgq health`` and ``pgq workers health``: thin commands over ``pgq.health``.

``commands(handle_errors)`` returns them for ``pgq.cli`` to register (this
module does not import ``pgq.cli``: the CLI's error handling is passed in).
``pgq health --check`` is for probes and cron: exit 0 / 1 / 2 when the most
severe firing alert rule is none / a warning / critical, 3 when it could not
check (the database did not answer).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from pgq.errors import PgqError
from pgq.health import alerts as alert_rules
from pgq.health.queries import HealthQueries

if TYPE_CHECKING:
    from pgq.health.analysis import WorkerHealth

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
#: Seconds of samples analysed by default (``analysis.WINDOW_SECONDS``; numpy and scipy
#: load only when a command runs).
WINDOW_SECONDS = 3600.0


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "inf"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _when(p: Any) -> str:
    if p is None:
        return "-"
    return f"{_duration(p.seconds)} ({_duration(p.earliest)}-{_duration(p.latest)}, p={p.probability:.2f})"


def _read(obj: Any, window: float) -> tuple[list[WorkerHealth], list[alert_rules.Alert]]:
    from pgq.health import analysis

    with obj.queue() as queue:
        queries = HealthQueries(queue.settings.schema)
        with queue.pool.connection() as conn:
            workers = analysis.read(conn, queries, window_seconds=window,
                                    rss_limit_bytes=queue.settings.health_rss_limit_bytes)
            return workers, alert_rules.evaluate(conn, queries)


def analysed(queue: Any, window: float = WINDOW_SECONDS) -> dict[Any, WorkerHealth]:
    """Each live worker's health analysis (score, trend, anomalies, predictions) by worker id,
    read through ``queue`` (a ``pgq.Queue``); for ``pgq workers``."""
    from pgq.health import analysis

    with queue.pool.connection() as conn:
        return {w.worker_id: w for w in analysis.read(conn, HealthQueries(queue.settings.schema),
                                                      window_seconds=window,
                                                      rss_limit_bytes=queue.settings.health_rss_limit_bytes)}


def trend_columns(w: WorkerHealth | None) -> tuple[str, str, str]:
    """(trend, anomalies, fails in) of a worker's analysis, as ``pgq workers`` prints them."""
    if w is None:
        return "-", "-", "-"
    trend = "-" if w.trend_per_hour is None else f"{w.trend_per_hour:+.2f}/h"
    found = ", ".join(sorted({f"{a.metric}({a.against})" for a in w.anomalies})) or "-"
    return trend, found, _when(w.failure)


def _workers_table(workers: list[WorkerHealth]) -> str:
    rows = [(str(w.worker_id)[:8], ",".join(w.queues), "-" if w.score is None else f"{w.score:.2f}",
             w.state, *trend_columns(w), _when(w.memory)) for w in workers]
    return _table(["id", "queues", "score", "state", "trend", "anomalies", "fails in", "memory full in"], rows)


def commands(handle_errors: Decorator) -> tuple[click.Command, click.Command]:
    """``(pgq health, pgq workers health)``, wrapped in the CLI's error handling."""

    @click.command("health")
    @click.option("--check", is_flag=True, help="Exit 0/1/2 for ok/warning/critical alert rules (3: could not check).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--window", type=click.FloatRange(60, 7 * 24 * 3600), default=WINDOW_SECONDS,
                  show_default=True, help="Seconds of samples analysed.")
    @click.pass_obj
    @handle_errors
    def health(obj: Any, check: bool, as_json: bool, window: float) -> None:
        """Worker health summary and alert rules (`--check` for probes: exit 0 ok, 1 warning, 2 critical)."""
        try:
            workers, alerts = _read(obj, window)
        except PgqError as exc:
            if not check:
                raise
            click.secho(f"error: could not check: {exc}", fg="red", err=True)
            sys.exit(alert_rules.EXIT_UNKNOWN)
        state, code = alert_rules.status(alerts)
        states = {s: sum(w.state == s for w in workers) for s in ("healthy", "degraded", "failing", "unknown")}
        if as_json:
            click.echo(json.dumps({"status": state, "workers": states,
                                   "alerts": [a.as_dict() for a in alerts],
                                   "predicted_failures": [w.as_dict() for w in workers if w.failure or w.memory],
                                   "anomalies": sum(len(w.anomalies) for w in workers)}, indent=2, sort_keys=True))
        else:
            firing = [a for a in alerts if a.firing]
            click.echo(f"status: {state}")
            click.echo("workers: " + ", ".join(f"{n} {s}" for s, n in states.items()))
            click.echo(f"anomalies: {sum(len(w.anomalies) for w in workers)}, predicted failures: "
                       f"{sum(w.failure is not None for w in workers)}, memory: "
                       f"{sum(w.memory is not None for w in workers)}")
            click.echo(_table(["rule", "severity", "subject", "value", "threshold", "firing", "detail"],
                              [(a.rule, a.severity, a.subject[:8] if len(a.subject) > 30 else a.subject,
                                f"{a.value:.4g}", f"{a.threshold:g}", "FIRING" if a.firing else "", a.detail)
                               for a in (alerts if not check else firing)]) if (alerts if not check else firing)
                       else "no alert firing")
        if check:
            sys.exit(code)

    @click.command("health")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--window", type=click.FloatRange(60, 7 * 24 * 3600), default=WINDOW_SECONDS,
                  show_default=True, help="Seconds of samples analysed.")
    @click.pass_obj
    @handle_errors
    def workers_health(obj: Any, as_json: bool, window: float) -> None:
        """Live workers' health: score, state, trend per hour, anomalies, predicted failure."""
        workers, _ = _read(obj, window)
        if as_json:
            click.echo(json.dumps([w.as_dict() for w in workers], indent=2, sort_keys=True))
            return
        click.echo(_workers_table(workers) if workers else "no health samples in the window")

    return health, workers_health
