"""The plans of one claim and one completion, as the worker sends them, with their row counts and buffers.

The claim and the completion are stored functions: ``EXPLAIN`` of the call shows
only a function scan. ``auto_explain`` (loaded for one session, superuser only)
logs the plan of every statement the functions run, with ``ANALYZE`` and
``BUFFERS``; with ``client_min_messages = log`` those log lines come back to the
client as notices, collected here. Everything runs in one transaction that is
rolled back (a worker registered, N jobs claimed, then completed): the table is
left as it was.
"""

from __future__ import annotations

import re
import socket
import uuid
from typing import Any

import psycopg

from pgq.db import driver_url
from pgq.queries import Queries

from .names import APP_PREFIX, SCHEMA

_SETTINGS = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on",
    "SET auto_explain.log_timing = on",
    "SET auto_explain.log_nested_statements = on",
    "SET client_min_messages = log",
)
_BUFFERS = re.compile(r"Buffers: shared (?:hit=(\d+))?\s*(?:read=(\d+))?")
_DURATION = re.compile(r"duration: ([0-9.]+) ms")


def claim_and_complete(url: str, queue: str, batch: int) -> dict[str, Any]:
    """Plans of one ``get_runnable_jobs_v2`` of ``batch`` jobs of ``queue`` and one ``complete_jobs`` of them.

    Returns ``{"available": False, "why": ...}`` where ``auto_explain`` cannot be loaded.
    """
    queries = Queries(SCHEMA)
    notices: list[str] = []
    with psycopg.connect(driver_url(url), application_name=f"{APP_PREFIX}-plans") as conn:
        try:
            for statement in _SETTINGS:
                conn.execute(statement)
        except psycopg.Error as exc:
            return {"available": False, "why": str(exc).strip()}
        conn.commit()
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        try:
            worker = uuid.uuid4()
            queries.register_worker(conn, worker, socket.gethostname(), 0, [queue], batch, "{}")
            conn.execute("SELECT 1")
            notices.clear()
            jobs = queries.get_runnable_jobs_v2(conn, [queue], worker, batch, 0, None)
            queries.complete_jobs(conn, worker, [j.id for j in jobs], [j.attempts for j in jobs], [None] * len(jobs))
            conn.execute("SELECT 1")  # a notice can arrive with the next statement's reply
        finally:
            conn.rollback()
    # In order: the claim's nested statements, then the claim itself, the same for the completion.
    plans = [n for n in notices if "plan:" in n]
    cut = next((i + 1 for i, text in enumerate(plans) if ".get_runnable_jobs_v2(" in _query(text)), len(plans))
    end = next((i + 1 for i, text in enumerate(plans) if ".complete_jobs(" in _query(text)), len(plans))
    return {"available": True, "batch": batch, "claimed": len(jobs),
            "claim": _summary(plans[:cut]), "complete": _summary(plans[cut:end])}


def _query(text: str) -> str:
    """The first line of the logged plan's query text."""
    found = re.search(r"Query Text: (.*)", text)
    return found.group(1) if found else ""


def _summary(plans: list[str]) -> dict[str, Any]:
    """The call's duration and shared buffers (its plan is logged last, and its function
    scan's buffers include the nested statements'), each nested statement's, and the texts."""
    figures = [_figures(text) for text in plans]
    total = figures[-1] if figures else {"ms": None, "shared_hit": 0, "shared_read": 0}
    return {**total, "statements": figures[:-1], "plans": plans}


def _figures(text: str) -> dict[str, Any]:
    duration = _DURATION.search(text)
    buffers = _BUFFERS.search(text)
    return {"ms": float(duration.group(1)) if duration else None,
            "shared_hit": int(buffers.group(1) or 0) if buffers else 0,
            "shared_read": int(buffers.group(2) or 0) if buffers else 0}
