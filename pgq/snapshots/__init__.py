"""State snapshots: FULL / INCREMENTAL / AUTO, restore with a conflict policy, point in time, files.

The Python API behind ``pgq snapshot ...``. Every call takes a target: a
``pgq.Queue`` or a ``pgq.Settings`` (its database and schema), opens one
connection of its own for the call and closes it. What a snapshot holds, the
format and the restore rules are in docs/snapshots.md; the bytes live in
``format``, capture and chains in ``capture``, restore in ``restore``, the
maintenance leader's AUTO snapshots in ``auto``.

    info = pgq.snapshots.create(q)                       # FULL
    pgq.snapshots.create(q, kind="INCREMENTAL")
    report = pgq.snapshots.restore(q, at=when, policy="newest", dry_run=True)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pgq.db import connect, translated
from pgq.errors import SnapshotError, ValidationError
from pgq.settings import Settings
from pgq.snapshots import capture
from pgq.snapshots.capture import Conn
from pgq.snapshots.format import (
    FORMAT_VERSION,
    SECTIONS,
    SnapshotInfo,
    State,
    compress,
    encode_full,
    field_at,
    file_bytes,
    full_state,
    read_file,
)
from pgq.snapshots.format import read_sections
from pgq.snapshots.queries import SnapshotQueries
from pgq.snapshots.restoring import POLICIES, RestoreReport, restore_state

KINDS = ("FULL", "INCREMENTAL", "AUTO")


def _settings(target: Any) -> Settings:
    settings = target if isinstance(target, Settings) else getattr(target, "settings", None)
    if not isinstance(settings, Settings):
        raise ValidationError(f"expected a pgq.Queue or pgq.Settings, got {type(target).__name__}")
    return settings


@contextlib.contextmanager
def _connection(target: Any) -> Iterator[tuple[Conn, str]]:
    settings = _settings(target)
    url = settings.require_database_url()
    with translated(url), connect(url) as conn:
        yield conn, settings.schema


def _snapshot_id(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(f"a snapshot id is a UUID, got {value!r}") from None


def _when(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ValidationError(f"at= must be a timezone-aware datetime, got {value!r}")
    return value


def create(target: Any, kind: str = "FULL", *, full_every: int = 10) -> SnapshotInfo:
    """Take a snapshot of the non-terminal jobs, their dependency edges and the worker registry (commits).

    Args:
        kind: FULL, INCREMENTAL (what changed since the previous snapshot taken here),
            or AUTO (an INCREMENTAL, or a FULL when there is none yet or the chain has
            ``full_every`` members).
    Raises:
        SchemaNotReady, SnapshotIncompatible: the schema is not at this pgq's revision.
        SnapshotError: an INCREMENTAL with no snapshot before it.
    """
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1:
        raise ValidationError(f"full_every must be a whole number >= 1, got {full_every!r}")
    with _connection(target) as (conn, schema):
        return capture.create(conn, schema, kind, full_every=full_every)


def list_snapshots(target: Any) -> list[SnapshotInfo]:
    """Every snapshot stored in the target's schema, oldest first."""
    with _connection(target) as (conn, schema):
        q = SnapshotQueries(schema)
        capture.check_revision(conn, q)
        return [capture.info_from_row(row) for row in conn.execute(q.list).fetchall()]


def show(target: Any, snapshot_id: Any) -> SnapshotInfo:
    """One snapshot's description (``SnapshotNotFound`` if there is none with that id)."""
    with _connection(target) as (conn, schema):
        q = SnapshotQueries(schema)
        capture.check_revision(conn, q)
        return capture.get(conn, q, _snapshot_id(snapshot_id))


def load(target: Any, snapshot_id: Any = None, *, at: dt.datetime | None = None) -> tuple[SnapshotInfo, State]:
    """The state a snapshot stands for (by id, or the one for the point in time ``at``)."""
    with _connection(target) as (conn, schema):
        return _load(conn, schema, snapshot_id, at)


def _load(conn: Conn, schema: str, snapshot_id: Any, at: dt.datetime | None) -> tuple[SnapshotInfo, State]:
    q = SnapshotQueries(schema)
    capture.check_revision(conn, q)
    if (snapshot_id is None) == (at is None):
        raise ValidationError("give a snapshot id or at= (a point in time), not both")
    info = capture.get(conn, q, _snapshot_id(snapshot_id)) if at is None else capture.at(conn, q, _when(at))
    return info, capture.resolve(conn, q, info)


@dataclass
class StateDiff:
    """How two states differ, per section: keys only in the new one, only in the old one, and changed."""

    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not any(self.added.values()) and not any(self.removed.values()) and not any(self.changed.values())


def compare(old: State, new: State) -> StateDiff:
    """The difference from ``old`` to ``new``."""
    out = StateDiff()
    for name in SECTIONS:
        before, after = old.sections[name], new.sections[name]
        out.added[name] = sorted(k.decode() for k in after.keys() - before.keys())
        out.removed[name] = sorted(k.decode() for k in before.keys() - after.keys())
        out.changed[name] = sorted(k.decode() for k in after.keys() & before.keys() if after[k] != before[k])
    return out


def diff(target: Any, old: Any, new: Any = None) -> StateDiff:
    """Compare snapshot ``old`` with snapshot ``new``, or with the database now when ``new`` is None."""
    with _connection(target) as (conn, schema):
        _, before = _load(conn, schema, old, None)
        after = capture.current_state(conn, schema) if new is None else _load(conn, schema, new, None)[1]
    return compare(before, after)


def restore(target: Any, snapshot_id: Any = None, *, at: dt.datetime | None = None, file: str | os.PathLike[str] | None = None,
            source: Any = None, policy: str = "skip", dry_run: bool = False) -> RestoreReport:
    """Restore a snapshot's state into the target's database: one transaction, all or nothing.

    Args:
        snapshot_id / at / file: which state: a stored snapshot, the point in time
            ``at`` (the latest FULL at or before it plus the INCREMENTALs up to it),
            or an export file.
        source: where ``snapshot_id`` / ``at`` are stored when not in the target
            (a Queue or Settings of another database); default the target.
        policy: for a job id present in both: ``skip`` (keep the target's row),
            ``overwrite`` (take the snapshot's), ``newest`` (the later ``updated_at``).
        dry_run: compute and return the plan, change nothing.
    Raises:
        NoSnapshotBefore, SnapshotNotFound, SnapshotCorrupt, SnapshotIncompatible, SchemaNotReady.
    """
    if policy not in POLICIES:
        raise ValidationError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if file is not None:
        if snapshot_id is not None or at is not None or source is not None:
            raise ValidationError("file= restores a file: give no snapshot id, at= or source=")
        info, body = read_file(_read(file), str(file))
        state = full_state(read_sections(body, info.format_version))
    else:
        with _connection(source if source is not None else target) as (conn, schema):
            info, state = _load(conn, schema, snapshot_id, at)
    with _connection(target) as (conn, schema):
        return restore_state(conn, schema, info, state, policy=policy, dry_run=dry_run)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SnapshotError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


def export(target: Any, snapshot_id: Any, path: str | os.PathLike[str]) -> SnapshotInfo:
    """Write the state of snapshot ``snapshot_id`` (resolved: a FULL) to the file ``path``."""
    with _connection(target) as (conn, schema):
        info, state = _load(conn, schema, snapshot_id, None)
    body = encode_full({name: list(state.sections[name].values()) for name in SECTIONS})
    compressed, sha = compress(body)
    exported = SnapshotInfo(info.id, "FULL", info.origin, info.created_at, None, None, FORMAT_VERSION,
                            info.schema_revision, info.db_snapshot, sha, len(compressed),
                            {**info.metadata, "exported_from": info.kind})
    tmp = f"{os.fspath(path)}.tmp"
    try:
        with open(tmp, "wb") as handle:
            for piece in file_bytes(exported, _settings(target).schema, compressed):
                handle.write(piece)
        os.replace(tmp, path)
    except OSError as exc:
        raise SnapshotError(f"cannot write {os.fspath(path)}: {exc.strerror}") from None
    return exported


def import_file(target: Any, path: str | os.PathLike[str]) -> SnapshotInfo:
    """Store the snapshot in the file ``path`` in the target's schema (origin ``import``), checked first."""
    info, body = read_file(_read(path), os.fspath(path))
    # Parses whole, or SnapshotCorrupt before anything is written; stored in the current format.
    state = full_state(read_sections(body, info.format_version))
    body = encode_full({name: list(state.sections[name].values()) for name in SECTIONS})
    compressed, sha = compress(body)
    with _connection(target) as (conn, schema):
        q = SnapshotQueries(schema)
        capture.check_revision(conn, q)
        if conn.execute(q.get, [info.id]).fetchone() is not None:
            raise SnapshotError(f"snapshot {info.id} is already stored in schema {schema!r}")
        conn.execute(q.save, [info.id, "FULL", "import", None, None, FORMAT_VERSION, info.schema_revision,
                              info.db_snapshot, compressed, sha, json.dumps(info.metadata), info.created_at])
    return SnapshotInfo(info.id, "FULL", "import", info.created_at, None, None, FORMAT_VERSION, info.schema_revision,
                        info.db_snapshot, sha, len(compressed), info.metadata)


def prune(target: Any, keep_seconds: float, *, now: dt.datetime | None = None) -> int:
    """Delete snapshot chains whose newest member is older than ``keep_seconds`` (the newest FULL's chain stays)."""
    if isinstance(keep_seconds, bool) or not isinstance(keep_seconds, (int, float)) or not keep_seconds >= 0:
        raise ValidationError(f"keep_seconds must be a number of seconds >= 0, got {keep_seconds!r}")
    with _connection(target) as (conn, schema):
        q = SnapshotQueries(schema)
        capture.check_revision(conn, q)
        row = conn.execute(q.prune, [float(keep_seconds), now]).fetchone()
        return int(row[0]) if row else 0


__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "POLICIES",
    "RestoreReport",
    "SnapshotInfo",
    "State",
    "StateDiff",
    "compare",
    "create",
    "diff",
    "export",
    "field_at",
    "import_file",
    "list_snapshots",
    "load",
    "prune",
    "restore",
    "show",
]
