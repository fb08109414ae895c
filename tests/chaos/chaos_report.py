"""The figures of the chaos scenarios: kept for the table pytest prints at the end of the
session (``conftest.pytest_terminal_summary``) and, when ``$PGQ_CHAOS_REPORT`` names a
file, appended to it as JSON lines (the source of docs/reliability.md's table)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

RESULTS = pytest.StashKey[list[dict[str, Any]]]()


def record(pytestconfig: pytest.Config, summary: dict[str, Any]) -> None:
    """Keep a scenario's figures for the table at the end of the session."""
    pytestconfig.stash.setdefault(RESULTS, []).append(summary)
    path = os.environ.get("PGQ_CHAOS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(summary, default=str) + "\n")
