"""Command-line options the scenarios share (click ``Option`` objects, so that a
scenario's defaults can be read back for ``pgq bench all``)."""

from __future__ import annotations

from typing import Any

import click


def jobs(default: int, help: str = "Jobs to process.") -> click.Option:
    return click.Option(["--jobs", "-n"], type=click.IntRange(1), default=default, show_default=True, help=help)


def workers(default: int) -> click.Option:
    return click.Option(["--workers", "-w"], type=click.IntRange(1, 64), default=default, show_default=True,
                        help="Worker processes.")


def concurrency(default: int = 16) -> click.Option:
    return click.Option(["--concurrency", "-c"], type=click.IntRange(1, 1000), default=default, show_default=True,
                        help="Jobs run at once per worker process.")


def batch_size() -> click.Option:
    return click.Option(["--batch-size"], type=click.IntRange(1, 10000), default=100, show_default=True,
                        help="Most jobs claimed per round trip.")


def sleep_ms(default: float) -> click.Option:
    return click.Option(["--sleep-ms"], type=click.FloatRange(0), default=default, show_default=True,
                        help="What the job body does: sleep this many milliseconds (0 = no-op).")


def duration(default: float) -> click.Option:
    return click.Option(["--duration"], type=click.FloatRange(0.1), default=default, show_default=True,
                        help="Seconds to run.")


def number(name: str, default: Any, help: str, kind: Any = None) -> click.Option:
    return click.Option([name], type=kind or click.IntRange(0), default=default, show_default=True, help=help)


def defaults(params: list[click.Parameter]) -> dict[str, Any]:
    """The default value of each option, by parameter name."""
    return {p.name: p.default for p in params if p.name is not None}
