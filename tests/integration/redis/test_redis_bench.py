"""Smoke test of `pgq bench redis` (Postgres-only against the accelerator) on a tiny N.

Not a benchmark: it checks that both modes run, process every job once and
report every figure, through the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def test_bench_redis_reports_both_modes(db_url: str, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQ_")}
    args = ["redis", "--levels", "2", "-w", "2", "--duration", "1", "-n", "300", "--sleep-ms", "0",
            "--idle", "0", "--latency-jobs", "3", "--redis-url", redis_url, "--json"]
    done = subprocess.run([sys.executable, "-m", "pgq.cli", "--database-url", db_url, "bench", *args],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    levels = record["levels"]
    assert [lv["mode"] for lv in levels] == ["postgres", "redis"]
    for level in levels:
        assert level["jobs_per_s"] > 0 and level["jobs_done"] > 0 and level["duplicated"] == 0
        assert level["postgres_commits_per_job"] > 0
        assert level["pickup_latency_ms"]["n"] == 3 and level["pickup_latency_ms"]["p50"] > 0
        assert level["idle_postgres_commits_per_s"] >= 0
