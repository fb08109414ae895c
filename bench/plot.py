"""``--plot out.png``: throughput over time and latency distributions (matplotlib).

Up to four panels, those with data: burn-down throughput (throughput, depth,
quick) and sustained throughput (steady, scale), as handlers finished per
second from the counters sampled every 100 ms; the cumulative distribution of
pickup and end-to-end latencies, and of the completion lag (``finished_at`` -
handler end), log-scaled, with p50 and p99 in the legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pgq.errors import ConfigurationError

from .common import Run

_BURN_DOWN = ("throughput", "depth", "quick")
_PANELS = {
    "burn-down": "Burn-down throughput (100 ms samples)",
    "sustained": "Sustained throughput (100 ms samples)",
    "pickup": "Pickup and end-to-end latency (CDF)",
    "completion": "Completion written after the handler ended (CDF)",
}


def require() -> None:
    """Fail before any work when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigurationError("--plot needs matplotlib: pip install 'pgq[bench]'") from None


def draw(runs: list[Run], path: str | Path) -> None:
    require()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _collect(runs)
    kinds = [k for k in _PANELS if data[k]] or ["burn-down"]
    rows, cols = (1, len(kinds)) if len(kinds) <= 2 else (2, 2)
    fig, axes = plt.subplots(rows, cols, figsize=(7.2 * cols, 5.0 * rows), squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=False):
        (_timelines if kind in ("burn-down", "sustained") else _cdfs)(ax, data[kind])
        ax.set_title(_PANELS[kind], fontsize=11)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7.5, loc="best")
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    fig.suptitle(_caption(runs), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timelines(ax: Any, timelines: dict[str, Any]) -> None:
    for label, timeline in timelines.items():
        t, count = _trim(np.asarray(timeline, dtype=float)[:, :2]).T
        if t.size > 1:
            ax.step(t[1:], np.diff(count) / np.maximum(np.diff(t), 1e-6), where="pre", label=label, linewidth=1.2)
    ax.set(xlabel="seconds since start", ylabel="jobs/s (handlers finished)")
    ax.set_ylim(bottom=0)


def _cdfs(ax: Any, samples: dict[str, Any]) -> None:
    for label, values in samples.items():
        values = np.sort(np.asarray(values, dtype=float))
        values = values[values > 0]  # log scale; a pickup before the commit returned is not drawn
        if values.size:
            p50, p99 = np.percentile(values, [50, 99])
            ax.plot(values, np.arange(1, values.size + 1) / values.size, linewidth=1.4,
                    label=f"{label}: p50 {p50:.2f}, p99 {p99:.2f} ms (n={values.size})")
    ax.set(xlabel="milliseconds (log scale)", ylabel="fraction of jobs", xscale="log", ylim=(0, 1.01))


def _trim(timeline: np.ndarray) -> np.ndarray:
    """Drop the samples after the count stopped moving (workers exiting), keeping one."""
    moved = np.nonzero(np.diff(timeline[:, 1]))[0]
    return timeline[: moved[-1] + 3] if moved.size else timeline


def _collect(runs: list[Run]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {kind: {} for kind in _PANELS}
    for run in runs:
        s, scenario = run.series, run.record["scenario"]
        timelines = dict(s.get("timelines", {}))
        if "timeline" in s:
            timelines[s.get("label", scenario)] = s["timeline"]
        data["burn-down" if scenario in _BURN_DOWN else "sustained"].update(timelines)
        for label, values in s.get("latency", {}).items():
            data["completion" if label.startswith("completion") else "pickup"][label] = values
        if "completion_lag_ms" in s:
            data["completion"][f"completion lag, {s.get('label', scenario)}"] = s["completion_lag_ms"]
    return data


def _caption(runs: list[Run]) -> str:
    if not runs:
        return "pgq bench"
    r = runs[0].record
    pg, m = r["postgres"], r["machine"]
    names = ", ".join(dict.fromkeys(run.record["scenario"] for run in runs))
    return (f"pgq bench {names} — {r['date']} — PostgreSQL {pg['server_version'].split()[0]} "
            f"(fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}), "
            f"{m['cores']} cores, {m['memory_gib']} GiB, pgq {r['versions'].get('pgq_commit') or r['versions']['pgq']}")
