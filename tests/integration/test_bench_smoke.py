"""Smoke test of `pgq bench`: every scenario runs on a tiny N and reports sane figures.

Not a benchmark: sizes are tiny and no figure is compared with a target. The
scenarios that fork worker processes run through the real command in a
subprocess (a fresh process to fork from); the bench creates its own schema
(pgq_bench) in the test's database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgq.cli.bench import load_bench

pytestmark = pytest.mark.integration

ENVELOPE = {"bench", "scenario", "date", "settings", "versions", "postgres", "machine"}


def bench(db_url: str, *args: str) -> list[dict[str, Any]]:
    """Run `pgq bench ARGS --json`; return its records (one JSON object per line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    done = subprocess.run([sys.executable, "-m", "pgq.cli", "--database-url", db_url, "bench", *args, "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    for record in records:
        check_envelope(record)
    return records


def check_envelope(record: dict[str, Any]) -> None:
    assert ENVELOPE <= set(record)
    assert {"fsync", "synchronous_commit", "shared_buffers", "server_version"} <= set(record["postgres"])
    assert record["machine"]["cores"] >= 1 and record["machine"]["memory_gib"] > 0
    assert record["versions"]["pgq"]


def check_cost(phase: dict[str, Any], *, commits_at_least: float = 0.0) -> None:
    per = phase["postgres_cost"]["per_1000_jobs"]
    assert per["commits"] >= commits_at_least
    assert per["wal_bytes"] > 0
    assert per["dead_tuples"] >= 0


def check_burn_down(result: dict[str, Any], jobs: int) -> None:
    assert result["completed"] == jobs
    assert result["handler_runs"] == jobs
    assert result["lost_or_duplicated"] == 0
    assert result["process_jobs_per_s"] > 0
    assert result["completion_lag_ms"]["n"] == jobs
    assert result["completion_lag_ms"]["p50"] is not None
    check_cost(result, commits_at_least=1)


def test_baseline(db_url: str) -> None:
    (r,) = bench(db_url, "baseline", "-n", "300", "--inserts", "50", "--latency-jobs", "10", "--gap-ms", "1")
    assert r["scenario"] == "baseline"
    for key in ("copy_rows_per_s", "insert_commit_rows_per_s", "claim_loop_1conn_jobs_per_s",
                "claim_loop_2conn_jobs_per_s"):
        assert r[key] > 0, key
    for n in (1, 2):
        loop = r["phases"][f"claim_loop_{n}conn"]
        assert loop["jobs"] == 300 and loop["connections"] == n
        check_cost(loop, commits_at_least=1)
    assert r["phases"]["insert_commit"]["postgres_cost"]["totals"]["commits"] >= 50
    assert r["notify_pickup_ms"]["n"] == 10 and r["notify_pickup_ms"]["p50"] > 0


def test_enqueue(db_url: str) -> None:
    (r,) = bench(db_url, "enqueue", "-n", "300", "--single", "30", "--chunk", "100")
    assert r["enqueue_single_jobs_per_s"] > 0 and r["enqueue_bulk_jobs_per_s"] > 0
    assert r["phases"]["single"]["postgres_cost"]["totals"]["commits"] >= 30
    assert r["phases"]["bulk"]["postgres_cost"]["totals"]["rows_inserted"] >= 300
    assert "vs_baseline" not in r  # no baseline ran in this invocation


def test_async_compares_one_event_loop_with_threads_in_interleaved_rounds(db_url: str) -> None:
    (r,) = bench(db_url, "async", "-n", "60", "--concurrency", "10", "--rounds", "2")
    assert r["settings"] == {"jobs": 60, "concurrency": 10, "pool_size": 4, "rounds": 2}
    for name in ("async", "threads", "one_thread"):
        assert [p["jobs"] for p in r["phases"][name]] == [60, 60]
        assert all(p["latency_ms"]["n"] == 60 and p["latency_ms"]["p99"] > 0 for p in r["phases"][name])
        assert r[f"{name}_jobs_per_s"] == r["median"][name]["jobs_per_s"] > 0
    assert r["async_vs_threads"] == round(r["async_jobs_per_s"] / r["threads_jobs_per_s"], 3)


def test_throughput(db_url: str) -> None:
    (r,) = bench(db_url, "throughput", "-n", "200", "-w", "1", "-c", "4")
    assert r["settings"] == {"jobs": 200, "workers": 1, "concurrency": 4, "batch_size": 100, "job_sleep_ms": 0.0}
    check_burn_down(r, 200)
    assert r["timeline"][-1][1] == 200  # the sampled counter saw every job


def test_graph(db_url: str) -> None:
    (r,) = bench(db_url, "graph", "-n", "200", "-w", "1", "-c", "4")
    assert r["settings"]["jobs"] == 200 and r["settings"]["block"] == 100
    for phase in ("graph", "independent"):
        check_burn_down(r["phases"][phase], 200)
    assert r["graph_vs_independent"] == pytest.approx(r["graph_jobs_per_s"] / r["independent_jobs_per_s"], rel=0.01)
    assert r["graph_enqueue_seconds"] > 0


def test_steady(db_url: str) -> None:
    (r,) = bench(db_url, "steady", "--rate", "200", "--duration", "1", "-w", "1", "-c", "4", "--sleep-ms", "1")
    assert r["jobs"] == 200 and r["completed"] == 200 and r["lost_or_duplicated"] == 0
    assert r["produced_jobs_per_s"] > 0 and r["processed_jobs_per_s"] > 0
    for key in ("pickup_latency_ms", "end_to_end_ms", "completion_lag_ms"):
        assert r[key]["n"] == 200 and r[key]["p50"] is not None, key
    assert r["end_to_end_ms"]["p50"] > 0


def test_latency(db_url: str) -> None:
    (r,) = bench(db_url, "latency", "-n", "10", "--gap-ms", "1", "-c", "2")
    assert r["picked_up"] == 10
    assert r["pickup_latency_ms"]["n"] == 10 and r["pickup_latency_ms"]["p50"] > 0
    assert r["pickup_latency_ms"]["p50"] >= r["pickup_after_commit_ms"]["p50"]


def test_scale(db_url: str) -> None:
    (r,) = bench(db_url, "scale", "--levels", "1,4", "-w", "2", "--duration", "0.5", "-n", "300", "--sleep-ms", "0")
    assert [lv["concurrent_jobs"] for lv in r["levels"]] == [1, 4]
    for level in r["levels"]:
        assert level["jobs_per_s"] > 0 and level["duplicated"] == 0
        assert level["postgres_connections_peak"] >= level["processes"]  # at least the LISTEN connections
        assert level["rss_mb_peak_max"] > level["private_mb_peak_max"] > 0


def test_depth(db_url: str) -> None:
    (r,) = bench(db_url, "depth", "-n", "200", "--small", "500", "--large", "2000", "-c", "4")
    assert r["small"]["rows_before"] == 500 and r["large"]["rows_before"] == 2000
    assert r["large"]["fill"]["backlog"] == 200 and r["large"]["fill"]["history"] == 1800
    for run in ("small", "large"):
        check_burn_down(r[run], 200)
        plans = r[run]["plans"]  # one claim of a batch and its completion, under auto_explain (superuser here)
        assert plans["available"] is True and plans["claimed"] == 100
        for step, statement in (("claim", "get_runnable_jobs_v2("), ("complete", "complete_jobs(")):
            assert statement in plans[step]["plans"][-1] and plans[step]["ms"] > 0
            assert plans[step]["shared_hit"] + plans[step]["shared_read"] > 0 and plans[step]["statements"]
    assert "Index Scan using jobs_claim_idx" in "".join(r["large"]["plans"]["claim"]["plans"])
    assert r["large_vs_small"] > 0


def test_memory_scenario_times_search_and_the_three_burn_downs(db_url: str) -> None:
    (r,) = bench(db_url, "memory", "-n", "200", "--rounds", "1", "--points", "500")
    assert r["scenario"] == "memory" and r["latency"]["search_indexed"]["points_500"]["n"] == 200
    assert {len(r["runs"][mode]) for mode in ("off", "process", "thread")} == {1}
    assert r["runs"]["off"][0]["writer"] is None
    assert r["runs"]["process"][0]["writer"]["stored"] == r["runs"]["thread"][0]["writer"]["stored"] == 20
    assert r["runs"]["process"][0]["child_cpu_ms_per_job"] > 0


def test_snapshots_scenario_times_creation_and_restores_every_job(db_url: str) -> None:
    (r,) = bench(db_url, "snapshots", "-n", "300", "--repeat", "2")
    assert r["scenario"] == "snapshots" and r["full_create_ms"]["n"] == 2
    assert r["restored_jobs"] == 300 and r["restore_jobs_per_s"] > 0
    assert 0 < r["bytes_per_job"] < r["bytes_per_job_uncompressed"]


def test_bench_without_scenario_runs_the_quick_bench(db_url: str) -> None:
    (r,) = bench(db_url, "-n", "200", "--latency-jobs", "5", "-w", "1", "-c", "4")
    assert r["scenario"] == "quick"
    assert r["enqueue_single_jobs_per_s"] > 0 and r["enqueue_bulk_jobs_per_s"] > 0
    assert r["completed"] == 200 and r["lost_or_duplicated"] == 0 and r["process_jobs_per_s"] > 0
    assert r["pickup_latency_ms"]["n"] == 5


def test_later_scenarios_are_given_as_fractions_of_the_baseline_and_plotted(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = [("baseline", {"jobs": 200, "inserts": 20, "latency_jobs": 0, "gap_ms": 1.0, "batch_size": 100}),
            ("enqueue", {"jobs": 200, "single": 20, "chunk": 100})]
    runs = load_bench().execute(plan, db_url, as_json=True, plot_path=str(tmp_path / "bench.png"))
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["scenario"] for r in printed] == ["baseline", "enqueue"]
    vs = runs[1].record["vs_baseline"]
    assert vs["single_vs_insert_commit"] > 0 and vs["bulk_vs_copy"] > 0
    assert set(vs["cost_bulk_vs_copy"]) == {"commits", "wal_bytes", "dead_tuples"}
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_all_runs_baseline_first_and_peers_last_with_its_overrides() -> None:
    plan = load_bench().cli.all_plan(skip=["scale"], jobs=123, large=456)
    names = [name for name, _ in plan]
    assert names == ["baseline", "enqueue", "throughput", "throughput", "steady", "latency", "depth", "peers"]
    params = dict(plan)
    assert [p["workers"] for n, p in plan if n == "throughput"] == [1, 2]
    assert params["depth"]["jobs"] == 123 and params["depth"]["large"] == 456
    assert params["latency"]["jobs"] == 200  # one at a time: not scaled with --jobs


def test_peers_report_unavailable_without_the_hook(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    peers = load_bench().scenarios.peers
    monkeypatch.setattr(peers, "_hook", lambda: (None, "bench/peers/ is not present"))
    (run,) = load_bench().execute([("peers", _peer_params())], db_url, as_json=True, plot_path=None)
    check_envelope(run.record)
    assert run.record["available"] is False and "not present" in run.record["reason"]


def test_peers_call_the_hook_for_each_peer_and_workload(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def run_peer(peer: str, workload: str, url: str, **settings: Any) -> dict[str, Any]:
        calls.append((peer, workload, settings))
        return {"process_jobs_per_s": 1000.0, "enqueue_single_jobs_per_s": 100.0, "enqueue_bulk_jobs_per_s": 1e4,
                "pickup_latency_ms": {"p50": 4.0, "p99": 8.0}}

    peers = load_bench().scenarios.peers
    monkeypatch.setattr(peers, "_hook", lambda: (run_peer, ""))
    (run,) = load_bench().execute([("peers", _peer_params())], db_url, as_json=True, plot_path=None)
    assert [(p, w) for p, w, _ in calls] == [(p, w) for p in ("pgqueuer", "procrastinate")
                                             for w in ("enqueue", "throughput", "latency")]
    assert calls[1][2]["jobs"] == 200 and calls[1][2]["workers"] == 1
    assert run.record["peers"]["pgqueuer"]["throughput"]["process_jobs_per_s"] == 1000.0
    assert set(run.record["pgq_vs_peer"]) == {"pgqueuer", "procrastinate"}


def _peer_params() -> dict[str, Any]:
    return {"jobs": 200, "single": 10, "workers": 1, "concurrency": 4, "latency_jobs": 5, "gap_ms": 1.0}


def test_health_scenario_compares_sampling_on_and_off_and_times_the_analysis(db_url: str) -> None:
    [record] = bench(db_url, "health", "-n", "400", "--rounds", "1", "--fleet-workers", "40",
                     "--fleet-samples", "12")
    assert record["scenario"] == "health"
    sampling = record["sampling"]
    assert len(sampling["jobs_per_s_on"]) == len(sampling["jobs_per_s_off"]) == 1
    assert sampling["lost_or_duplicated"] == 0 and sampling["median_ratio"] > 0
    assert record["analysis"]["workers"] == 40 and record["analysis"]["best_ms"] > 0
    assert record["read"]["rows"] == 40 * 12
