"""The snapshot format (version 1): sections of COPY text rows, compressed, checked.

A snapshot's body is a list of sections, each a header line ``<name> <count>``
followed by ``count`` rows in PostgreSQL's COPY text format (one line per row:
COPY escapes newlines, tabs and backslashes inside values). The body is stored
zlib-compressed, with the SHA-256 of the uncompressed bytes beside it. A file
(``pgq snapshot export``) is a magic line, one line of JSON header and the
compressed body. This module owns the bytes only: no database, no policy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pgq.errors import SnapshotCorrupt, SnapshotIncompatible

FORMAT_VERSION = 2
# Format 1 (revision 0011) lacks the job columns format 2 appends; read_sections
# converts it (those columns NULL: no lent or aged priority, no group, no trace).
READABLE_VERSIONS = (1, 2)
MAGIC = b"PGQ-SNAPSHOT\n"
# zlib level 3: within a few percent of level 6's size at about twice its speed.
COMPRESS_LEVEL = 3

# The columns format 1 copies, in order. A new column in a later revision is a
# new format version (and a converter), never a silent change of this list.
JOB_COLUMNS = (
    "id", "queue", "task", "payload", "priority", "status", "run_at", "attempts", "max_attempts", "timeout",
    "retry_base_seconds", "retry_factor", "retry_max_seconds", "retry_jitter", "unique_key", "worker_id",
    "started_at", "finished_at", "result", "last_error", "created_at", "updated_at", "life", "claim_position",
    "free_rescues",
    # Format 2: the priority lent or aged (revisions 0009, 0012), the group (0012), the trace (0014).
    "effective_priority", "group_key", "trace_context",
)
_ADDED_IN_2 = 3
EDGE_COLUMNS = ("parent_id", "child_id", "created_at")
WORKER_COLUMNS = (
    "id", "hostname", "pid", "queues", "capacity", "current_load", "status", "health_score", "last_heartbeat",
    "started_at", "stopped_at", "metadata", "created_at", "updated_at", "started_through", "drain_requested_at",
    "stuck_handlers",
)
# Section name -> (columns, how many leading fields make the row's key).
SECTIONS: dict[str, tuple[tuple[str, ...], int]] = {
    "jobs": (JOB_COLUMNS, 1),
    "edges": (EDGE_COLUMNS, 2),
    "workers": (WORKER_COLUMNS, 1),
}
# Statuses a snapshot holds: the jobs still to run (not completed, dead or cancelled).
LIVE_STATUSES = ("waiting", "queued", "running", "retrying")
KINDS = ("FULL", "INCREMENTAL")


def row_key(line: bytes, key_fields: int) -> bytes:
    """The key of a COPY text row: its first ``key_fields`` fields, tab-joined."""
    parts = line.split(b"\t", key_fields)
    return b"\t".join(parts[:key_fields])


def field_at(line: bytes, index: int) -> bytes:
    """Field ``index`` of a COPY text row, still escaped."""
    return line.split(b"\t", index + 1)[index]


@dataclass
class State:
    """The resolved state a snapshot stands for: each section's rows by key."""

    sections: dict[str, dict[bytes, bytes]] = field(default_factory=lambda: {name: {} for name in SECTIONS})

    def count(self, name: str) -> int:
        return len(self.sections[name])

    def copy(self) -> State:
        return State({name: dict(rows) for name, rows in self.sections.items()})


@dataclass
class Delta:
    """What an INCREMENTAL holds: rows new or changed since its parent, and keys deleted."""

    upserts: dict[str, list[bytes]] = field(default_factory=lambda: {name: [] for name in SECTIONS})
    deletes: dict[str, list[bytes]] = field(default_factory=lambda: {name: [] for name in SECTIONS})

    def size(self) -> int:
        return sum(len(v) for v in self.upserts.values()) + sum(len(v) for v in self.deletes.values())


def delta(old: State, new: State) -> Delta:
    """The change from ``old`` to ``new``: rows that differ or are new, keys that went."""
    out = Delta()
    for name in SECTIONS:
        before, after = old.sections[name], new.sections[name]
        out.upserts[name] = [line for key, line in after.items() if before.get(key) != line]
        out.deletes[name] = [key for key in before if key not in after]
    return out


def apply(state: State, change: Delta) -> None:
    """Apply ``change`` to ``state`` in place."""
    for name, (_, key_fields) in SECTIONS.items():
        rows = state.sections[name]
        for key in change.deletes[name]:
            rows.pop(key, None)
        for line in change.upserts[name]:
            rows[row_key(line, key_fields)] = line


# ---------------------------------------------------------------- bodies


def _section(name: str, lines: list[bytes]) -> Iterator[bytes]:
    yield f"{name} {len(lines)}\n".encode()
    for line in lines:
        yield line
        yield b"\n"


def encode_full(state_lines: dict[str, list[bytes]]) -> bytes:
    """The uncompressed body of a FULL snapshot: one section per name in ``SECTIONS``."""
    return b"".join(chunk for name in SECTIONS for chunk in _section(name, state_lines[name]))


def encode_delta(change: Delta) -> bytes:
    """The uncompressed body of an INCREMENTAL: upserts, then deleted keys (``<name>-``)."""
    parts: list[bytes] = []
    for name in SECTIONS:
        parts.extend(_section(name, change.upserts[name]))
    for name in SECTIONS:
        parts.extend(_section(name + "-", change.deletes[name]))
    return b"".join(parts)


def decode_sections(body: bytes) -> dict[str, list[bytes]]:
    """Split an uncompressed body into its sections; ``SnapshotCorrupt`` when it does not parse."""
    lines = body.split(b"\n")
    if not lines or lines[-1] != b"":
        raise SnapshotCorrupt("snapshot body does not end with a newline (truncated?)")
    sections: dict[str, list[bytes]] = {}
    i, end = 0, len(lines) - 1
    while i < end:
        head = lines[i].split(b" ")
        if len(head) != 2 or not head[1].isdigit():
            raise SnapshotCorrupt(f"snapshot body: expected a section header at line {i + 1}, got {lines[i][:60]!r}")
        name, count = head[0].decode("ascii", "replace"), int(head[1])
        if i + 1 + count > end:
            raise SnapshotCorrupt(f"snapshot body: section {name!r} announces {count} rows, fewer follow (truncated?)")
        sections[name] = lines[i + 1 : i + 1 + count]
        i += 1 + count
    return sections


def read_sections(body: bytes, version: int) -> dict[str, list[bytes]]:
    """``decode_sections`` for a body of format ``version``, converted to the current format
    (format 1's job rows get format 2's columns, NULL). ``SnapshotIncompatible`` for a
    format this pgq does not read."""
    if version not in READABLE_VERSIONS:
        raise SnapshotIncompatible(f"snapshot format {version}; this pgq reads formats "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}")
    sections = decode_sections(body)
    if version == 1 and "jobs" in sections:
        sections["jobs"] = [line + b"\t\\N" * _ADDED_IN_2 for line in sections["jobs"]]
    return sections


def full_state(sections: dict[str, list[bytes]]) -> State:
    """The state a FULL body's sections describe."""
    state = State()
    for name, (_, key_fields) in SECTIONS.items():
        if name not in sections:
            raise SnapshotCorrupt(f"snapshot body lacks the section {name!r}")
        state.sections[name] = {row_key(line, key_fields): line for line in sections[name]}
    return state


def delta_from(sections: dict[str, list[bytes]]) -> Delta:
    """The change an INCREMENTAL body's sections describe."""
    change = Delta()
    for name in SECTIONS:
        if name not in sections or name + "-" not in sections:
            raise SnapshotCorrupt(f"incremental snapshot body lacks the section {name!r} or {name + '-'!r}")
        change.upserts[name] = sections[name]
        change.deletes[name] = sections[name + "-"]
    return change


def compress(body: bytes) -> tuple[bytes, str]:
    """The stored form of ``body`` and the SHA-256 (hex) of ``body``."""
    return zlib.compress(body, COMPRESS_LEVEL), hashlib.sha256(body).hexdigest()


class BodyWriter:
    """Compresses and hashes a body as its pieces arrive: a FULL never holds its uncompressed body.

    The stored bytes read back exactly as ``compress`` of the joined pieces would
    (the same zlib level; the SHA-256 is of the uncompressed bytes).
    """

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(COMPRESS_LEVEL)
        self._sha = hashlib.sha256()
        self._parts: list[bytes] = []
        self.size = 0  # uncompressed bytes so far

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self._sha.update(data)
        self._parts.append(self._zlib.compress(data))

    def section(self, name: str, count: int) -> None:
        self.write(f"{name} {count}\n".encode())

    def finish(self) -> tuple[bytes, str]:
        """The compressed body and the SHA-256 (hex) of the uncompressed one."""
        self._parts.append(self._zlib.flush())
        return b"".join(self._parts), self._sha.hexdigest()


def decompress(data: bytes, sha256: str, what: str) -> bytes:
    """Uncompress and check a stored body; ``SnapshotCorrupt`` naming ``what`` when it fails."""
    try:
        decompressor = zlib.decompressobj()
        body = decompressor.decompress(data) + decompressor.flush()
    except zlib.error as exc:
        raise SnapshotCorrupt(f"{what}: the compressed body is damaged ({exc})") from None
    if not decompressor.eof:
        raise SnapshotCorrupt(f"{what}: the compressed body is truncated")
    if decompressor.unused_data:
        raise SnapshotCorrupt(f"{what}: {len(decompressor.unused_data)} bytes of garbage after the body")
    if hashlib.sha256(body).hexdigest() != sha256:
        raise SnapshotCorrupt(f"{what}: checksum mismatch (the body is not the one that was written)")
    return body


# ---------------------------------------------------------------- snapshots and files


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot (a row of ``state_snapshots`` without its body)."""

    id: uuid.UUID
    kind: str  # FULL or INCREMENTAL
    origin: str  # manual, auto or import
    created_at: dt.datetime
    base_id: uuid.UUID | None
    full_id: uuid.UUID | None
    format_version: int
    schema_revision: str
    db_snapshot: str
    body_sha256: str
    size_bytes: int  # compressed body
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("id", "base_id", "full_id"):
            data[key] = None if data[key] is None else str(data[key])
        data["created_at"] = self.created_at.isoformat()
        return data


def file_bytes(info: SnapshotInfo, schema: str, compressed: bytes) -> Iterable[bytes]:
    """The pieces of an export file of ``info`` (a FULL) with its compressed body."""
    header = info.as_dict()
    header.update(schema=schema, body_bytes=len(compressed))
    return (MAGIC, json.dumps(header, sort_keys=True).encode() + b"\n", compressed)


def read_file(data: bytes, source: str) -> tuple[SnapshotInfo, bytes]:
    """Parse an export file: its header and its (checked) uncompressed body.

    Raises ``SnapshotCorrupt`` for anything that is not a whole, intact pgq
    snapshot file, ``SnapshotIncompatible`` for another format version.
    """
    if not data.startswith(MAGIC):
        raise SnapshotCorrupt(f"{source} is not a pgq snapshot file (it does not start with {MAGIC.strip().decode()})")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise SnapshotCorrupt(f"{source}: the header line is incomplete (truncated file)")
    try:
        header = json.loads(data[len(MAGIC) : end])
        version = int(header["format_version"])
        if version not in READABLE_VERSIONS:
            raise SnapshotIncompatible(f"{source} is in snapshot format {version}; this pgq reads formats "
                                       f"{', '.join(map(str, READABLE_VERSIONS))}")
        info = SnapshotInfo(
            id=uuid.UUID(header["id"]), kind=str(header["kind"]), origin="import",
            created_at=dt.datetime.fromisoformat(header["created_at"]), base_id=None, full_id=None,
            format_version=version, schema_revision=str(header["schema_revision"]),
            db_snapshot=str(header["db_snapshot"]), body_sha256=str(header["body_sha256"]),
            size_bytes=int(header["body_bytes"]), metadata=dict(header.get("metadata") or {}),
        )
    except SnapshotIncompatible:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotCorrupt(f"{source}: the header is not valid ({type(exc).__name__}: {exc})") from None
    if info.kind != "FULL":
        raise SnapshotCorrupt(f"{source}: an export file holds a FULL snapshot, this one says {info.kind!r}")
    compressed = data[end + 1 :]
    if len(compressed) != info.size_bytes:
        raise SnapshotCorrupt(f"{source}: the body has {len(compressed)} bytes, the header announces {info.size_bytes} "
                              "(truncated or appended to)")
    return info, decompress(compressed, info.body_sha256, source)
