"""Smoke test of `pgq bench soak`: a few seconds of it, with failing and slow jobs and
pruning on, through the real command (see test_bench_smoke.py for the style).

Not a benchmark: no figure is compared with a target. What must hold at any
size: every job accounted for, none run more often than it had to, the dead
letter queue exactly the failing jobs, and a sample per window.
"""

from __future__ import annotations

import pytest

from test_bench_smoke import bench

pytestmark = pytest.mark.integration


def test_soak_runs_producers_and_workers_and_accounts_for_every_job(db_url: str) -> None:
    (r,) = bench(db_url, "soak", "--minutes", "0.05", "--rate", "200", "-w", "1", "-c", "4",
                 "--sample-seconds", "0.5", "--retention-seconds", "0.5", "--slow-ms", "20",
                 "--slow-fraction", "0.05", "--fail-fraction", "0.05", "--max-attempts", "2")
    assert r["scenario"] == "soak"
    assert r["settings"]["minutes"] == 0.05 and r["settings"]["rate"] == 200.0
    assert r["jobs"] == 600  # 3 s at 200 jobs/s
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["dead_letters_exact"] is True and r["dead"] > 0
    # A failing job runs --max-attempts (2) times, every other job once.
    assert r["handler_runs"] == r["jobs"] + r["dead"]
    assert r["pruned"] > 0  # maintenance pruned completed jobs past the 0.5 s retention
    assert r["pickup_latency_ms"]["n"] == r["jobs"] and r["pickup_latency_ms"]["p99"] > 0
    assert len(r["windows"]) >= 6
    sampled = [w for w in r["windows"] if "jobs_bytes" in w]
    assert len(sampled) >= 4
    assert all(w["jobs_bytes"] > 0 and w["jobs_dead_tuples"] >= 0 for w in sampled)
    # Sizes over time: the heap and the indexes of jobs apart, the history table, rows deleted.
    assert all(w["jobs_heap_bytes"] > 0 and w["jobs_index_bytes"] > 0 and w["executions_bytes"] > 0
               and w["jobs_heap_bytes"] + w["jobs_index_bytes"] <= w["jobs_bytes"] for w in sampled)
    assert max(w["jobs_deleted"] for w in sampled) > 0  # pruning (statistics lag by up to a second)
    assert r["jobs_bytes_after_retention"] is not None and r["jobs_growth_after_retention"] > 0
    assert sum(w["runs_per_s"] for w in r["windows"]) * 0.5 == pytest.approx(r["handler_runs"], abs=1)
    assert r["samples"][-1]["final"] and r["samples"][-1]["depth"] == 0
    assert set(r["autovacuum"]) == {"autovacuum", "autovacuum_naptime", "autovacuum_vacuum_cost_delay"}
    assert all("jobs_pkey" in s["relations"] and s["dead_letters"] >= 0 for s in r["samples"])
    assert r["dead_purged"] == 0  # dead jobs are kept by default


def test_soak_with_a_dead_job_retention_accounts_for_the_purged_dead_jobs(db_url: str) -> None:
    (r,) = bench(db_url, "soak", "--minutes", "0.05", "--rate", "200", "-w", "1", "-c", "4",
                 "--sample-seconds", "0.5", "--retention-seconds", "0.5", "--dead-retention-seconds", "0",
                 "--fail-fraction", "0.1", "--max-attempts", "2")
    assert r["settings"]["dead_retention_seconds"] == 0
    assert r["lost"] == 0 and r["duplicated"] == 0
    # Purged dead jobs ran all their attempts; the dead letters left are exactly the failing jobs still dead.
    assert r["dead_purged"] > 0 and r["dead_letters_exact"] is True
    assert r["handler_runs"] == r["jobs"] + r["dead"] + r["dead_purged"]
