"""Human output: one aligned table per scenario run, and the small helpers the
scenarios use to phrase costs and ratios."""

from __future__ import annotations

from typing import Any

from .common import ratio

Rows = list[tuple[str, str]]


def render(record: dict[str, Any], rows: Rows) -> str:
    """Header (scenario and settings), the scenario's rows, footer (Postgres and machine)."""
    settings = ", ".join(f"{k}={v}" for k, v in record["settings"].items())
    pg, m = record["postgres"], record["machine"]
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"pgq bench {record['scenario']} — {settings}"]
    lines += [f"  {label:<{width}} : {value}" for label, value in rows]
    lines.append(f"  PostgreSQL {pg['server_version']} (fsync={pg['fsync']}, synchronous_commit="
                 f"{pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']})"
                 f"{' embedded' if pg.get('embedded') else ''}; {m['cores']} cores, {m['memory_gib']} GiB;"
                 f" pgq {record['versions']['pgq']} ({record['versions'].get('pgq_commit') or 'installed'})")
    return "\n".join(lines)


def cost_text(phase: dict[str, Any] | None) -> str:
    """ '   per 1k jobs: 20 commits, 812 kB WAL, 1,000 dead tuples' (empty without a cost)."""
    cost = (phase or {}).get("postgres_cost", {}).get("per_1000_jobs")
    if not cost:
        return ""
    return (f"   per 1k jobs: {cost['commits']:,.0f} commits, {cost['wal_bytes'] / 1000:,.0f} kB WAL,"
            f" {cost['dead_tuples']:,.0f} dead tuples")


def cost_ratios(phase: dict[str, Any] | None, base: dict[str, Any] | None) -> dict[str, float | None] | None:
    """pgq's cost per job over the raw ceiling's, for commits, WAL bytes and dead tuples."""
    mine = (phase or {}).get("postgres_cost", {}).get("per_1000_jobs")
    theirs = (base or {}).get("postgres_cost", {}).get("per_1000_jobs")
    if not mine or not theirs:
        return None
    return {k: ratio(mine[k], theirs[k], 2) for k in ("commits", "wal_bytes", "dead_tuples")}


def latency_text(lat: dict[str, Any] | None) -> str:
    if not lat or lat.get("p50") is None:
        return "no samples"
    parts = [f"{k} {lat[k]} ms" for k in ("p50", "p95", "p99", "max") if lat.get(k) is not None]
    return ", ".join(parts) + (f" (n={lat['n']})" if lat.get("n") is not None else "")


def fraction_text(value: float | None, against: str) -> str:
    return "" if value is None else f"   = {value:.0%} of {against}"
