"""peers: the enqueue, throughput and latency workloads through pgqueuer and procrastinate.

The peers live in ``bench/peers/`` (scripts run in a virtualenv of their own,
because pgqueuer installs a console script named ``pgq``). This scenario only
calls its hook, ``run_peer(peer, workload, url, **settings) -> dict``, for
each peer and workload, with the same sizes as pgq's scenarios, and puts pgq's
figures from the same invocation next to them (``pgq_vs_peer``: pgq's rate
over the peer's; for latency, the peer's p50 and p99 over pgq's, so > 1 means
pgq is faster everywhere). Without ``bench/peers/`` it reports that peers are
unavailable.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from .. import options
from ..common import Env, Run, envelope, ratio
from ..report import latency_text

NAME = "peers"
PEERS = ("pgqueuer", "procrastinate")
WORKLOADS = ("enqueue", "throughput", "latency")
PARAMS = [
    options.jobs(20000, "Jobs of the throughput burn-down and of the bulk enqueue."),
    options.number("--single", 2000, "Jobs enqueued one per transaction."),
    options.workers(1), options.concurrency(),
    options.number("--latency-jobs", 200, "Jobs enqueued one at a time to idle workers."),
    options.number("--gap-ms", 10.0, "Pause between two of those.", float),
]
ALL: list[dict[str, Any]] = [{}]


def run(env: Env, tmp: Path, *, jobs: int, single: int, workers: int, concurrency: int, latency_jobs: int,
        gap_ms: float) -> Run:
    settings = {"jobs": jobs, "single": single, "workers": workers, "concurrency": concurrency,
                "latency_jobs": latency_jobs, "gap_ms": gap_ms}
    run_peer, reason = _hook()
    if run_peer is None:
        env.say(f"peers: unavailable ({reason})")
        return Run(envelope(env, NAME, settings, {"available": False, "reason": reason}))
    knobs: dict[str, dict[str, Any]] = {
        "enqueue": {"single_jobs": single, "bulk_jobs": jobs},
        "throughput": {"jobs": jobs, "workers": workers, "concurrency": concurrency},
        "latency": {"latency_jobs": latency_jobs, "workers": workers, "concurrency": concurrency,
                    "interval_ms": gap_ms},
    }
    results: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        results[peer] = {}
        for workload in WORKLOADS:
            env.say(f"peers: {peer} {workload} ...")
            try:
                results[peer][workload] = run_peer(peer, workload, env.url, progress=env.progress,
                                                   on_stderr=_echo if env.progress else None, **knobs[workload])
            except Exception as exc:  # noqa: BLE001 - one failing peer must not hide the others
                results[peer][workload] = {"error": f"{type(exc).__name__}: {exc}"}
    metrics = {"available": True, "peers": results, "pgq_vs_peer": _versus(env, results, workers)}
    return Run(envelope(env, NAME, settings, metrics))


def rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    if not record["available"]:
        return [("peers", f"unavailable: {record['reason']}")]
    out = []
    for peer, workloads in record["peers"].items():
        for workload, result in workloads.items():
            out.append((f"{peer} {workload}", _summary(workload, result)))
    for peer, vs in record["pgq_vs_peer"].items():
        out.append((f"pgq vs {peer}", ", ".join(f"{k} x{v}" for k, v in vs.items() if v is not None)
                    or "- (pgq's scenarios did not run in this invocation; `pgq bench all` runs both)"))
    return out


def _hook() -> tuple[Any, str]:
    """``bench.peers.run_peer``, or None and why not."""
    if not (Path(__file__).resolve().parent.parent / "peers" / "__init__.py").is_file():
        return None, "bench/peers/ is not present"
    try:
        module = importlib.import_module("..peers", __package__)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return None, f"bench/peers failed to import: {type(exc).__name__}: {exc}"
    run_peer = getattr(module, "run_peer", None)
    return (run_peer, "") if callable(run_peer) else (None, "bench/peers does not export run_peer")


def _echo(line: str) -> None:
    click.echo(f"  {line}", err=True)


def _summary(workload: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error'].splitlines()[0]}"
    if workload == "enqueue":
        return (f"single {result.get('enqueue_single_jobs_per_s') or 0:,.0f} jobs/s, "
                f"bulk {result.get('enqueue_bulk_jobs_per_s') or 0:,.0f} jobs/s")
    if workload == "throughput":
        return f"{result.get('process_jobs_per_s') or 0:,.0f} jobs/s"
    return latency_text(result.get("pickup_latency_ms"))


def _versus(env: Env, results: dict[str, dict[str, Any]], workers: int) -> dict[str, dict[str, float | None]]:
    """pgq's figures from this invocation over each peer's (latency: the peer's over pgq's)."""
    enqueue = env.latest("enqueue") or {}
    throughput = env.latest("throughput", workers=workers) or {}
    latency = env.latest("latency") or {}
    ours = latency.get("pickup_latency_ms") or {}
    out = {}
    for peer, r in results.items():
        theirs = (r.get("latency") or {}).get("pickup_latency_ms") or {}
        out[peer] = {
            "enqueue_single": ratio(enqueue.get("enqueue_single_jobs_per_s"),
                                    r["enqueue"].get("enqueue_single_jobs_per_s"), 2),
            "enqueue_bulk": ratio(enqueue.get("enqueue_bulk_jobs_per_s"),
                                  r["enqueue"].get("enqueue_bulk_jobs_per_s"), 2),
            "throughput": ratio(throughput.get("process_jobs_per_s"), r["throughput"].get("process_jobs_per_s"), 2),
            "latency_p50": ratio(theirs.get("p50"), ours.get("p50"), 2),
            "latency_p99": ratio(theirs.get("p99"), ours.get("p99"), 2),
        }
    return out
