"""The snapshot format without a database: bodies, deltas, files and their checks."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgq.errors import SnapshotCorrupt, SnapshotIncompatible
from pgq.snapshots.format import (
    MAGIC,
    SECTIONS,
    SnapshotInfo,
    State,
    apply,
    compress,
    decode_sections,
    decompress,
    delta,
    delta_from,
    encode_delta,
    encode_full,
    file_bytes,
    full_state,
    read_file,
)

# COPY text rows: escaped values never contain a raw newline; tabs separate fields.
values = st.lists(st.sampled_from(["a", "b", "\\\\", "\\n", "é", "\\N"]), max_size=5).map("".join)


def _rows(key_fields: int) -> st.SearchStrategy[dict[bytes, bytes]]:
    keys = st.tuples(*[st.integers(1, 30) for _ in range(key_fields)]).map(
        lambda k: "\t".join(str(x) for x in k).encode())
    return st.dictionaries(keys, values).map(
        lambda d: {k: k + b"\t" + v.encode() for k, v in d.items()})


states = st.builds(lambda jobs, edges, workers: State({"jobs": jobs, "edges": edges, "workers": workers}),
                   _rows(1), _rows(2), _rows(1))


@given(old=states, new=states)
def test_a_delta_applied_to_the_old_state_gives_the_new_one_through_its_body(old: State, new: State) -> None:
    body = encode_delta(delta(old, new))
    rebuilt = old.copy()
    apply(rebuilt, delta_from(decode_sections(body)))
    assert rebuilt.sections == new.sections


@given(state=states)
def test_a_full_body_reads_back_as_the_same_state(state: State) -> None:
    body = encode_full({name: list(state.sections[name].values()) for name in SECTIONS})
    compressed, sha = compress(body)
    assert full_state(decode_sections(decompress(compressed, sha, "x"))).sections == state.sections


def _file(state: State) -> bytes:
    body = encode_full({name: list(state.sections[name].values()) for name in SECTIONS})
    compressed, sha = compress(body)
    info = SnapshotInfo(uuid.uuid4(), "FULL", "manual", dt.datetime(2026, 12, 2, tzinfo=dt.UTC), None, None, 1,
                        "0011", "10:10:", sha, len(compressed), {"jobs": len(state.sections["jobs"])})
    return b"".join(file_bytes(info, "pgq", compressed))


def test_a_file_reads_back_with_its_header() -> None:
    state = State({"jobs": {b"1": b"1\tx"}, "edges": {}, "workers": {}})
    info, body = read_file(_file(state), "f")
    assert (info.kind, info.origin, info.schema_revision, info.metadata) == ("FULL", "import", "0011", {"jobs": 1})
    assert full_state(decode_sections(body)).sections == state.sections


@pytest.mark.parametrize("cut", [1, 5, 20, 100])
def test_every_truncation_of_a_file_is_refused(cut: int) -> None:
    data = _file(State({"jobs": {str(i).encode(): f"{i}\tpayload {i}".encode() for i in range(200)},
                        "edges": {}, "workers": {}}))
    with pytest.raises(SnapshotCorrupt):
        read_file(data[: len(data) - cut], "f")


def test_a_body_whose_sections_do_not_add_up_is_refused() -> None:
    with pytest.raises(SnapshotCorrupt, match="announces 3 rows"):
        decode_sections(b"jobs 3\n1\tx\n")
    with pytest.raises(SnapshotCorrupt, match="section header"):
        decode_sections(b"what is this\n")
    with pytest.raises(SnapshotCorrupt, match="lacks the section 'edges'"):
        full_state(decode_sections(b"jobs 0\n"))


def test_a_checksum_mismatch_is_refused() -> None:
    compressed, _ = compress(b"jobs 0\n")
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        decompress(compressed, "0" * 64, "x")


def test_a_newer_format_version_is_incompatible() -> None:
    data = _file(State())
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    header["format_version"] = 7
    with pytest.raises(SnapshotIncompatible, match="format 7"):
        read_file(MAGIC + json.dumps(header).encode() + data[end:], "f")
