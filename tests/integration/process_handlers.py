"""Module-level handlers for the process isolation tests (a child process imports
them by name; see ``pgq.worker.processes``)."""

from __future__ import annotations

import os
from pathlib import Path

import pgq


def loop_forever(marker: str) -> None:
    """Writes its process id to ``marker``, then never returns (and ignores cancelled)."""
    Path(marker).write_text(str(os.getpid()))
    while True:
        pass


def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b, "pid": os.getpid(), "job": pgq.current_job().job.id}


def crash() -> None:
    os._exit(3)


def not_json() -> object:
    return object()


def retry_once(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise pgq.Retry(after=0)
    return "second"
