"""pgq.snapshots refuses bad input with a typed error naming the problem, and changes nothing.

Unmigrated and newer schemas, a snapshot from another revision, damaged and
truncated files and bodies, a point in time before the first FULL, bad
arguments; and the same through ``pgq snapshot``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zlib

import factories
import pytest
from click.testing import CliRunner

from pgq import snapshots
from pgq.cli import main
from pgq.errors import (
    NoSnapshotBefore,
    SchemaNotReady,
    SnapshotCorrupt,
    SnapshotIncompatible,
    SnapshotNotFound,
    ValidationError,
)
from pgq.settings import Settings
from pgq.snapshots.format import MAGIC, compress

pytestmark = pytest.mark.integration


def _settings(url: str) -> Settings:
    return Settings(database_url=url)


@pytest.fixture
def exported(db_url, conn, tmp_path):
    for n in range(3):
        factories.insert_job(conn, payload={"n": n})
    info = snapshots.create(_settings(db_url))
    path = tmp_path / "good.pgqs"
    snapshots.export(_settings(db_url), info.id, path)
    conn.execute("DELETE FROM pgq.state_snapshots")
    conn.execute("DELETE FROM pgq.jobs")
    return path


def test_an_unmigrated_database_is_refused_for_every_operation(empty_db_url, tmp_path):
    for call in (lambda: snapshots.create(_settings(empty_db_url)),
                 lambda: snapshots.list_snapshots(_settings(empty_db_url)),
                 lambda: snapshots.restore(_settings(empty_db_url), at=dt.datetime.now(dt.UTC))):
        with pytest.raises(SchemaNotReady, match="never migrated"):
            call()


def test_a_newer_schema_is_refused_and_nothing_is_stored(db_url, conn):
    conn.execute("UPDATE pgq.alembic_version SET version_num = '9999'")
    with pytest.raises(SnapshotIncompatible, match="revision 9999, newer than this pgq"):
        snapshots.create(_settings(db_url))
    assert factories.table_counts(conn)["state_snapshots"] == 0


def test_a_snapshot_from_a_schema_at_another_revision_is_not_restored(db_url, conn, exported):
    data = exported.read_bytes()
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    header["schema_revision"] = "0007"
    exported.write_bytes(MAGIC + json.dumps(header).encode() + data[end:])
    before = factories.snapshot(conn)

    with pytest.raises(SnapshotIncompatible, match="revision 0007"):
        snapshots.restore(_settings(db_url), file=exported)
    assert factories.snapshot(conn) == before


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) - 10], "truncated"),
    (lambda data: data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:], "damaged|checksum"),
    (lambda data: b"hello, world\n" + data, "not a pgq snapshot file"),
    (lambda data: data[: len(MAGIC) + 20], "header line is incomplete"),
    (lambda data: data + b"more", "appended"),
])
def test_a_damaged_file_is_refused_by_import_and_restore(db_url, conn, exported, damage, message):
    exported.write_bytes(damage(exported.read_bytes()))
    before = factories.snapshot(conn)

    with pytest.raises(SnapshotCorrupt, match=message):
        snapshots.import_file(_settings(db_url), exported)
    with pytest.raises(SnapshotCorrupt, match=message):
        snapshots.restore(_settings(db_url), file=exported)
    assert factories.snapshot(conn) == before


def _rewrite_body(path, change) -> None:
    """Replace the body of an export file by ``change(body)``, with a checksum and length that match."""
    data = path.read_bytes()
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    body = change(zlib.decompress(data[end + 1:]))
    compressed, header["body_sha256"] = compress(body)
    header["body_bytes"] = len(compressed)
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + compressed)


def test_a_file_whose_rows_do_not_fit_the_tables_is_refused_and_nothing_is_restored(db_url, conn, exported):
    # Checksum and sections intact: only the database can tell that a job id is not a number.
    _rewrite_body(exported, lambda body: body.replace(b"\n", b"\nnot-a-number", 2).replace(b"\nnot-a-number", b"\n", 1))
    before = factories.snapshot(conn)

    with pytest.raises(SnapshotCorrupt, match="a row does not fit its table.*not-a-number"):
        snapshots.restore(_settings(db_url), file=exported)
    assert factories.snapshot(conn) == before


def test_a_file_whose_sections_announce_more_rows_than_follow_is_refused(db_url, conn, exported):
    _rewrite_body(exported, lambda body: body.replace(b"jobs 3\n", b"jobs 30\n", 1))
    before = factories.snapshot(conn)

    with pytest.raises(SnapshotCorrupt, match="announces 30 rows, fewer follow"):
        snapshots.import_file(_settings(db_url), exported)
    with pytest.raises(SnapshotCorrupt, match="announces 30 rows"):
        snapshots.restore(_settings(db_url), file=exported)
    assert factories.snapshot(conn) == before


def test_restore_into_a_schema_at_an_older_revision_is_refused_and_changes_nothing(db_url, conn, exported):
    head = conn.execute("SELECT version_num FROM pgq.alembic_version").fetchone()[0]
    conn.execute("UPDATE pgq.alembic_version SET version_num = '0001'")
    before = factories.snapshot(conn)

    with pytest.raises(SchemaNotReady, match=f"revision 0001, pgq needs {head}"):
        snapshots.restore(_settings(db_url), file=exported)
    assert factories.snapshot(conn) == before


def test_a_file_in_another_format_version_is_refused(db_url, conn, exported):
    data = exported.read_bytes()
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    header["format_version"] = 3  # a later pgq's format
    exported.write_bytes(MAGIC + json.dumps(header).encode() + data[end:])

    with pytest.raises(SnapshotIncompatible, match="format 3"):
        snapshots.import_file(_settings(db_url), exported)
    assert factories.table_counts(conn)["state_snapshots"] == 0


def test_a_damaged_stored_body_is_refused_and_nothing_is_restored(db_url, conn):
    factories.insert_job(conn)
    info = snapshots.create(_settings(db_url))
    conn.execute("UPDATE pgq.state_snapshots SET body = substring(body FROM 1 FOR octet_length(body) - 3)")
    conn.execute("DELETE FROM pgq.jobs")
    before = factories.snapshot(conn)

    with pytest.raises(SnapshotCorrupt, match=f"snapshot {info.id}.*truncated"):
        snapshots.restore(_settings(db_url), info.id)
    assert factories.snapshot(conn) == before


def test_a_point_in_time_before_the_first_full_is_refused(db_url, conn):
    with pytest.raises(NoSnapshotBefore, match="there is none"):
        snapshots.restore(_settings(db_url), at=dt.datetime.now(dt.UTC))
    info = snapshots.create(_settings(db_url))
    before = factories.snapshot(conn)

    with pytest.raises(NoSnapshotBefore, match="the first FULL snapshot was taken at"):
        snapshots.restore(_settings(db_url), at=info.created_at - dt.timedelta(seconds=1))
    assert factories.snapshot(conn) == before


def test_bad_arguments_are_refused_before_anything_happens(db_url, conn):
    settings = _settings(db_url)
    with pytest.raises(ValidationError, match="policy must be one of"):
        snapshots.restore(settings, uuid.uuid4(), policy="merge")
    with pytest.raises(ValidationError, match="timezone-aware"):
        snapshots.restore(settings, at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="a snapshot id is a UUID"):
        snapshots.show(settings, "nope")
    with pytest.raises(ValidationError, match="kind must be one of"):
        snapshots.create(settings, kind="PARTIAL")
    with pytest.raises(ValidationError, match="not both"):
        snapshots.load(settings, uuid.uuid4(), at=dt.datetime.now(dt.UTC))
    with pytest.raises(SnapshotNotFound):
        snapshots.restore(settings, uuid.uuid4())
    with pytest.raises(ValidationError, match="pgq.Queue or pgq.Settings"):
        snapshots.create("postgresql://x")
    assert factories.table_counts(conn)["state_snapshots"] == 0


def test_cli_says_what_is_wrong_with_the_documented_exit_codes(db_url, tmp_path):
    runner = CliRunner()
    base = ["--database-url", db_url, "snapshot"]

    usage = runner.invoke(main, [*base, "restore"])
    before_first = runner.invoke(main, [*base, "restore", "--at", "2020-01-01T00:00:00+00:00", "--dry-run"])
    (tmp_path / "x.pgqs").write_bytes(b"junk")
    corrupt = runner.invoke(main, [*base, "import", str(tmp_path / "x.pgqs")])
    naive = runner.invoke(main, [*base, "restore", "--at", "2020-01-01T00:00:00", "--dry-run"])

    assert usage.exit_code == 2 and "exactly one of" in usage.output
    assert before_first.exit_code == 1 and "no FULL snapshot at or before" in before_first.output
    assert corrupt.exit_code == 1 and "not a pgq snapshot file" in corrupt.output
    assert naive.exit_code == 2 and "time zone" in naive.output
