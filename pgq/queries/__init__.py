"""Every statement pgq sends at runtime, as one small typed function each.

Statements are built once per schema (``Queries(schema)``), with the schema
quoted by psycopg, and take only bound parameters. Each function takes a
connection (psycopg, or a caller's SQLAlchemy connection where transactional
use makes sense), runs one statement and returns plain values; deciding what
to do with them is the caller's business.

The statements live by concern, each next to the method that sends it:
``enqueue`` (producers), ``worker`` (a worker's row, claims, outcomes),
``control`` (inspecting and controlling jobs, the dead letter queue),
``maintenance`` (the leader's rescues and pruning), ``mirror`` (the
optional Redis accelerator's ``MirrorQueries``) and ``testing`` (the test
kit's reads and its clock, ``KitQueries``). ``Queries`` combines the
first four; import every name from here.
"""

from __future__ import annotations

from typing import Any

from pgq.errors import SchemaNotReady
from pgq.operations import Op, run
from pgq.queries.control import PURGE_BATCH, ControlQueries, DeadLetter
from pgq.queries.enqueue import EnqueueAttempt, EnqueueQueries
from pgq.queries.maintenance import MaintenanceQueries, Rescue
from pgq.queries.memory import MemoryQueries
from pgq.queries.mirror import MirrorQueries
from pgq.queries.scheduling import PauseQueries, PolicyQueries, ScheduleQueries
from pgq.queries.testing import KitQueries
from pgq.queries.worker import Heartbeat, WorkerQueries
from pgq.sqlfiles import head_revision

__all__ = [
    "PURGE_BATCH",
    "DeadLetter",
    "EnqueueAttempt",
    "Heartbeat",
    "KitQueries",
    "MemoryQueries",
    "MirrorQueries",
    "PauseQueries",
    "PolicyQueries",
    "Queries",
    "Rescue",
    "ScheduleQueries",
    "check_revision",
    "ensure_current",
]


class Queries(EnqueueQueries, WorkerQueries, ControlQueries, MaintenanceQueries):
    """The statements for one pgq schema."""


def ensure_current(conn: Any, schema: str) -> None:
    """Raise ``SchemaNotReady`` unless ``schema`` is at this pgq's head revision."""
    run(conn, check_revision(schema))


def check_revision(schema: str) -> Op[None]:
    """``ensure_current`` as an operation (for the async pool too)."""
    current = yield from Queries(schema).schema_revision.op()
    needed = head_revision()
    if current != needed:
        raise SchemaNotReady(current, needed, schema)
