"""Store and search latency of the execution memory in qdrant-client's local mode.

``python -m bench.memory_latency [--points 100000]`` prints JSON:
- ``embed``: the lexical embedder's time per context (batches of 256);
- ``store``: one ``ContextStore.upsert`` of 1, 10 and 100 contexts into an
  on-disk local store (``PGQ_MEMORY_PATH``-style), p50/p99 per batch;
- ``search``: embed one context and ``ContextStore.search(k=5)`` over 10k and
  ``--points`` stored contexts, p50/p99: ``indexed`` is what local mode does now
  (pgq's in-process float32 matrix, ``pgq.memory.index``, then the k payloads
  from Qdrant), ``qdrant_scan`` qdrant-client's own local search (before).
The search runs over a local collection kept in memory (``:memory:``): local
mode searches by brute force over numpy arrays whether or not it persists, and
filling an on-disk local store costs one SQLite commit per point (see
bench/RESULTS.md). Contexts are the labelled failures of ``tests/data``,
repeated with fresh ids.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from typing import Any

import numpy as np

from bench.memory_quality import load
from pgq.memory.context import ExecutionContext
from pgq.memory.embedders import LexicalEmbedder
from pgq.memory.index import VectorIndex
from pgq.memory.store import ContextStore, _models
from pgq.settings import Settings


def contexts(n: int) -> list[ExecutionContext]:
    base, _ = load()
    out = []
    for i in range(n):
        c = base[i % len(base)]
        out.append(ExecutionContext(job_id=i + 1, attempt=1, queue="default", task=c.task, outcome="failed",
                                    finished_at=1.7e9 + i, error_type=c.error_type,
                                    message=f"{c.message} (job {i}, shard {i % 17})", frames=c.frames,
                                    duration_ms=float(i % 1000), worker_id="w", payload_keys=("id", "to")))
    return out


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "n": len(values)}


def store_latency(embedder: LexicalEmbedder, pool: list[ExecutionContext]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as path:
        store = ContextStore.open(Settings(memory=True, memory_path=path), 384)
        at = 0
        for size, rounds in ((1, 100), (10, 40), (100, 10)):
            times = []
            for _ in range(rounds):
                batch = pool[at:at + size]
                at += size
                vectors = embedder.embed(batch)
                t = time.perf_counter()
                store.upsert(batch, vectors)
                times.append(time.perf_counter() - t)
            out[f"batch_{size}"] = pct(times) | {"per_context_ms": round(float(np.median(times)) * 1000 / size, 3)}
        store.close()
    return out


def search_latency(embedder: LexicalEmbedder, pool: list[ExecutionContext], sizes: list[int], indexed: bool) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    store = ContextStore(client, "bench", 384, "local (bench, in memory)")
    store._ensure_collection(_models())
    store.index = VectorIndex(384) if indexed else None
    store.local = indexed  # False: qdrant-client's own local search (what pgq used before the index)
    out: dict[str, Any] = {}
    filled = 0
    queries = contexts(300)[::-1]
    for size in sizes:
        while filled < size:
            batch = pool[filled:min(size, filled + 2000)]
            store.upsert(batch, embedder.embed(batch))
            filled += len(batch)
        times = []
        for q in queries[:200]:
            t = time.perf_counter()
            store.search(embedder.embed([q])[0], 5)
            times.append(time.perf_counter() - t)
        out[f"points_{size}"] = pct(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    embedder = LexicalEmbedder()
    pool = contexts(args.points)
    t = time.perf_counter()
    for i in range(0, 10_000, 256):
        embedder.embed(pool[i:i + 256])
    embed_ms = (time.perf_counter() - t) * 1000 / 10_000
    result = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
              "embed_ms_per_context": round(embed_ms, 4),
              "store_on_disk": store_latency(embedder, pool[-2000:]),
              "search": {"indexed": search_latency(embedder, pool, [10_000, args.points], True),
                         "qdrant_scan": search_latency(embedder, pool, [10_000, args.points], False)}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
