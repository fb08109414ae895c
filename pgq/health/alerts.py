"""Alert rules, read from the view ``health_alerts`` (the rules themselves are rows of ``alert_rules``).

The database evaluates the rules (so a DBA's query, a dashboard and ``pgq
health --check`` agree); this module turns the view's rows into ``Alert``
values and an overall status with the exit code a probe expects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pgq.health.queries import HealthQueries

#: Exit codes of ``pgq health --check`` (the monitoring-plugin convention).
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3


@dataclass(frozen=True)
class Alert:
    """One rule evaluated for one subject ('*', a queue, or a worker id)."""

    rule: str
    severity: str  # "warning" or "critical"
    subject: str
    value: float
    threshold: float
    firing: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(conn: Any, queries: HealthQueries) -> list[Alert]:
    """Every enabled rule evaluated now, firing ones first (critical first)."""
    return [Alert(str(r[0]), str(r[1]), str(r[2]), float(r[3]), float(r[4]), bool(r[5]), str(r[6]))
            for r in queries.alerts(conn)]


def status(alerts: list[Alert]) -> tuple[str, int]:
    """'ok', 'warning' or 'critical' (the most severe firing rule) and its exit code."""
    firing = {a.severity for a in alerts if a.firing}
    if "critical" in firing:
        return "critical", EXIT_CRITICAL
    if "warning" in firing:
        return "warning", EXIT_WARNING
    return "ok", EXIT_OK
