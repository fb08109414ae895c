"""A database far away: burn-down jobs/s and pickup latency against the round trip (issue 14, item 3).

For each added round trip (default 0, 1, 5, 20 ms) a delaying TCP proxy
(``tests/tcp_proxy.py --delay-ms``: half the round trip each way) is put in
front of the server, and ``pgq bench throughput``, ``pgq bench latency`` and
``pgq bench peers`` (pgqueuer and procrastinate, in their own virtualenv) run
through it, every client connection crossing the delay. The 0 ms point goes
through the proxy too, so that the curve shows the distance, not the proxy.
The proxy stands in for ``tc qdisc ... netem delay`` on a namespace link,
which needs a kernel built with ``CONFIG_NET_SCH_NETEM`` (this machine's is
not: ``tc`` answers "Specified qdisc kind is unknown").

    python -m bench.distance --url postgresql://postgres@127.0.0.1:5432/postgres \\
        --rtt 0,1,5,20 --jobs 3000 --out /tmp/distance.jsonl

Prints one table row per round trip; ``--out`` keeps every scenario's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "tests" / "tcp_proxy.py"  # a checkout's; the wheel ships no tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxied(url: str, port: int) -> str:
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=str(port))
    return make_conninfo("", **params)


def measured_rtt_ms(url: str, rounds: int = 50) -> float:
    """The median ``SELECT 1`` round trip through ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append((time.perf_counter() - began) * 1000)
    return round(sorted(times)[len(times) // 2], 2)


def bench(url: str, *args: str) -> list[dict[str, Any]]:
    """Run ``pgq bench ARGS --json`` against ``url``; its JSON records."""
    env = {**os.environ, "PGQ_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "pgq.cli", "bench", *args, "--json"], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"pgq bench {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def point(url: str, rtt: float, jobs: int, latency_jobs: int, peers: bool) -> dict[str, Any]:
    """One point of the curve: the proxy with ``rtt`` ms added, the scenarios through it."""
    port = _free_port()
    proxy = subprocess.Popen([sys.executable, str(PROXY), "--target",
                              f"{conninfo_to_dict(url).get('host', '127.0.0.1')}:{conninfo_to_dict(url).get('port', 5432)}",
                              "--port", str(port), "--delay-ms", str(rtt / 2)], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        proxy.stdout.readline()  # it listens
        far = _proxied(url, port)
        row: dict[str, Any] = {"rtt_added_ms": rtt, "rtt_measured_ms": measured_rtt_ms(far)}
        throughput = bench(far, "throughput", "-n", str(jobs), "-w", "1", "-c", "16")[-1]
        latency = bench(far, "latency", "-n", str(latency_jobs))[-1]
        row["pgq_jobs_per_s"] = throughput["process_jobs_per_s"]
        row["pgq_pickup_p50_ms"] = latency["pickup_latency_ms"]["p50"]
        if peers:
            record = bench(far, "peers", "-n", str(jobs), "--single", "0", "-w", "1", "-c", "16",
                           "--latency-jobs", str(latency_jobs))[-1]
            for peer, workloads in record.get("peers", {}).items():
                row[f"{peer}_jobs_per_s"] = workloads.get("throughput", {}).get("process_jobs_per_s")
                row[f"{peer}_pickup_p50_ms"] = workloads.get("latency", {}).get("pickup_latency_ms", {}).get("p50")
            row["records"] = [throughput, latency, record]
        else:
            row["records"] = [throughput, latency]
        return row
    finally:
        proxy.kill()
        proxy.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("PGQ_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--rtt", default="0,1,5,20", help="added round trips, ms")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if not PROXY.exists():
        parser.error(f"the delaying proxy {PROXY} is missing: run `python -m bench.distance` from a pgq checkout")
    for rtt in (float(r) for r in args.rtt.split(",")):
        row = point(args.url, rtt, args.jobs, args.latency_jobs, not args.no_peers)
        records = row.pop("records")
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({**row, "records": records}, default=str) + "\n")


if __name__ == "__main__":
    main()
