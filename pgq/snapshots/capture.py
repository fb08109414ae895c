"""Taking snapshots and reading them back: FULL, INCREMENTAL, AUTO; chains and points in time.

A snapshot is one REPEATABLE READ transaction: every section is copied (COPY
TO) from the same database snapshot, so a job and its edges and its worker are
seen as of one instant, whatever commits meanwhile. An INCREMENTAL is the
difference between that image and its parent's resolved image, computed here;
see docs/snapshots.md for why that is sound. Creation is serialised per schema
by a session advisory lock taken *before* the transaction's snapshot, so each
new snapshot sees its predecessor and chains are linear.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from pgq.errors import NoSnapshotBefore, SchemaNotReady, SnapshotCorrupt, SnapshotError, SnapshotIncompatible, SnapshotNotFound
from pgq.snapshots.format import (
    FORMAT_VERSION,
    SECTIONS,
    BodyWriter,
    SnapshotInfo,
    State,
    apply,
    compress,
    READABLE_VERSIONS,
    read_sections,
    decompress,
    delta,
    delta_from,
    encode_delta,
    full_state,
    row_key,
)
from pgq.snapshots.queries import SnapshotQueries
from pgq.sqlfiles import head_revision

Conn = psycopg.Connection[Any]


def info_from_row(row: tuple[Any, ...]) -> SnapshotInfo:
    return SnapshotInfo(
        id=row[0], kind=row[1], origin=row[2], created_at=row[3], base_id=row[4], full_id=row[5],
        format_version=int(row[6]), schema_revision=row[7], db_snapshot=row[8], body_sha256=row[9],
        size_bytes=int(row[10]), metadata=dict(row[11] or {}),
    )


def check_revision(conn: Conn, q: SnapshotQueries) -> str:
    """The schema's revision; ``SchemaNotReady`` if older than this pgq's, ``SnapshotIncompatible`` if newer."""
    exists = conn.execute(q.revision_exists, [q.version_table]).fetchone()
    if not exists or not exists[0]:
        raise SchemaNotReady(None, head_revision(), q.schema)
    row = conn.execute(q.revision).fetchone()
    current = str(row[0]) if row else None
    head = head_revision()
    if current is None or current < head:
        raise SchemaNotReady(current, head, q.schema)
    if current != head:
        raise SnapshotIncompatible(f"schema {q.schema!r} is at revision {current}, newer than this pgq ({head}): "
                                   "use the pgq that migrated it")
    return current


_BLOCK = 1 << 20  # bytes of COPY rows handed on at a time


def _copy_blocks(conn: Conn, statement: str) -> Iterator[bytes]:
    """The rows of a ``COPY ... TO STDOUT``, joined into blocks of about 1 MiB (whole rows each)."""
    with conn.cursor().copy(statement) as copy:
        block: list[Any] = []
        size = 0
        for row in copy:
            block.append(row)
            size += len(row)
            if size >= _BLOCK:
                yield b"".join(block)
                block, size = [], 0
        if block:
            yield b"".join(block)


def _copy_out(conn: Conn, statement: str) -> bytes:
    return b"".join(_copy_blocks(conn, statement))


def _lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\n")[:-1] if raw else []


def create(conn: Conn, schema: str, kind: str = "FULL", *, origin: str = "manual", full_every: int = 10) -> SnapshotInfo:
    """Take one snapshot (commits). ``kind`` FULL, INCREMENTAL, or AUTO (FULL when there is
    no parent or the parent's chain already has ``full_every`` members, else INCREMENTAL)."""
    q = SnapshotQueries(schema)
    check_revision(conn, q)
    conn.execute(q.lock, [q.lock_key])
    try:
        with conn.transaction():
            conn.execute(q.repeatable_read)
            conn.execute(q.text_settings)
            return _create_locked(conn, q, kind, origin, full_every)
    finally:
        conn.execute(q.unlock, [q.lock_key])


def _stream_full(conn: Conn, q: SnapshotQueries, jobs: int) -> tuple[bytes, str, int, dict[str, int]]:
    """Copy a FULL body straight into the compressor: the compressed body, its SHA-256, its size, the counts.

    ``jobs`` (counted earlier in the same REPEATABLE READ transaction) heads the jobs
    section, so its rows stream through without being held; edges and workers are small.
    """
    writer = BodyWriter()
    counts: dict[str, int] = {}
    for name in SECTIONS:
        if name == "jobs":
            writer.section(name, jobs)
            counts[name] = 0
            for block in _copy_blocks(conn, q.copy_out[name]):
                writer.write(block)
                counts[name] += block.count(b"\n")
            if counts[name] != jobs:  # one MVCC snapshot: cannot happen unless the isolation level was lost
                raise SnapshotError(f"snapshot capture: counted {jobs} jobs, copied {counts[name]}")
        else:
            raw = _copy_out(conn, q.copy_out[name])
            counts[name] = raw.count(b"\n")
            writer.section(name, counts[name])
            writer.write(raw)
    compressed, sha = writer.finish()
    return compressed, sha, writer.size, counts


def _create_locked(conn: Conn, q: SnapshotQueries, kind: str, origin: str, full_every: int) -> SnapshotInfo:
    row = conn.execute(q.facts, [q.jobs_table]).fetchone()
    assert row is not None
    taken_at, db_snapshot, changes, statuses = row
    statuses = {str(s): int(n) for s, n in statuses.items()}
    revision = check_revision(conn, q)
    found = conn.execute(q.latest_local).fetchone()
    parent = info_from_row(found) if found else None
    if kind == "AUTO":
        position = int(parent.metadata.get("chain_position", 0)) if parent else 0
        kind = "INCREMENTAL" if parent is not None and position + 1 < full_every else "FULL"
    if kind == "INCREMENTAL" and parent is None:
        raise SnapshotError("no snapshot to build an INCREMENTAL on: take a FULL first (or kind='AUTO')")
    metadata: dict[str, Any] = {"statuses": statuses, "changes_counter": int(changes or 0)}
    if kind == "FULL":
        compressed, sha, size, counts = _stream_full(conn, q, sum(statuses.values()))
        base_id = full_id = None
        metadata["chain_position"] = 0
    else:
        assert parent is not None
        raw = {name: _copy_out(conn, statement) for name, statement in q.copy_out.items()}
        counts = {name: raw[name].count(b"\n") for name in SECTIONS}
        current = State({name: {row_key(line, key_fields): line for line in _lines(raw[name])}
                         for name, (_, key_fields) in SECTIONS.items()})
        change = delta(resolve(conn, q, parent), current)
        body = encode_delta(change)
        compressed, sha = compress(body)
        size = len(body)
        base_id, full_id = parent.id, parent.full_id or parent.id
        metadata["chain_position"] = int(parent.metadata.get("chain_position", 0)) + 1
        metadata["changed"] = {name: len(change.upserts[name]) for name in SECTIONS}
        metadata["deleted"] = {name: len(change.deletes[name]) for name in SECTIONS}
    metadata.update(jobs=counts["jobs"], edges=counts["edges"], workers=counts["workers"], body_bytes=size)
    snapshot_id = uuid.uuid4()
    conn.execute(q.save, [snapshot_id, kind, origin, base_id, full_id, FORMAT_VERSION, revision, db_snapshot,
                          compressed, sha, json.dumps(metadata), taken_at])
    return SnapshotInfo(snapshot_id, kind, origin, taken_at, base_id, full_id, FORMAT_VERSION, revision, db_snapshot,
                        sha, len(compressed), metadata)


def get(conn: Conn, q: SnapshotQueries, snapshot_id: uuid.UUID) -> SnapshotInfo:
    row = conn.execute(q.get, [snapshot_id]).fetchone()
    if row is None:
        raise SnapshotNotFound(f"no snapshot {snapshot_id} in schema {q.schema!r}")
    return info_from_row(row)


def at(conn: Conn, q: SnapshotQueries, when: Any) -> SnapshotInfo:
    """The snapshot that stands for the state at ``when``: the latest taken here at or before it."""
    row = conn.execute(q.local_at, [when]).fetchone()
    first = conn.execute(q.first_full).fetchone()
    first_full = first[0] if first else None
    if row is None or first_full is None or first_full > when:
        after = f"; the first FULL snapshot was taken at {first_full.isoformat()}" if first_full else "; there is none"
        raise NoSnapshotBefore(f"no FULL snapshot at or before {when.isoformat()} in schema {q.schema!r}{after}")
    return info_from_row(row)


def resolve(conn: Conn, q: SnapshotQueries, info: SnapshotInfo) -> State:
    """The whole state ``info`` stands for: its FULL plus the INCREMENTALs of its chain up to it."""
    root = info.full_id or info.id
    members = {}
    for row in conn.execute(q.chain, [root, root]).fetchall():
        member = info_from_row(row[:-1])
        members[member.id] = (member, bytes(row[-1]))
    path = []
    cursor: uuid.UUID | None = info.id
    while cursor is not None:
        if cursor not in members:
            raise SnapshotCorrupt(f"snapshot {info.id}: its chain is broken at {cursor} (deleted by hand?)")
        member, body = members[cursor]
        path.append((member, body))
        cursor = member.base_id
    path.reverse()
    state: State | None = None
    for member, body in path:
        if member.format_version not in READABLE_VERSIONS:
            raise SnapshotIncompatible(f"snapshot {member.id} is in format {member.format_version}; "
                                       f"this pgq reads formats {', '.join(map(str, READABLE_VERSIONS))}")
        sections = read_sections(decompress(body, member.body_sha256, f"snapshot {member.id}"),
                                 member.format_version)
        if member.kind == "FULL":
            state = full_state(sections)
        else:
            if state is None:
                raise SnapshotCorrupt(f"snapshot {member.id}: an INCREMENTAL chain that does not start with a FULL")
            apply(state, delta_from(sections))
    assert state is not None
    return state


def current_state(conn: Conn, schema: str) -> State:
    """The database's state now, in snapshot form (nothing stored), for diffs."""
    q = SnapshotQueries(schema)
    check_revision(conn, q)
    with conn.transaction():
        conn.execute(q.repeatable_read)
        conn.execute(q.text_settings)
        return State({name: {row_key(line, key_fields): line for line in _lines(_copy_out(conn, q.copy_out[name]))}
                      for name, (_, key_fields) in SECTIONS.items()})
