"""Finding what pgq ships beside its code, without heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from pgq import sqlfiles


def test_head_revision_matches_alembic() -> None:
    alembic_head = ScriptDirectory(str(sqlfiles.migrations_dir())).get_current_head()
    assert alembic_head is not None
    assert sqlfiles.head_revision() == alembic_head


def test_two_heads_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    (versions / "c.py").write_text("revision = 'c'\ndown_revision = 'a'\n")
    monkeypatch.setattr(sqlfiles, "migrations_dir", lambda: tmp_path)
    sqlfiles.head_revision.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"exactly one head, found \['b', 'c'\]"):
            sqlfiles.head_revision()
    finally:
        sqlfiles.head_revision.cache_clear()


def test_the_runtime_does_not_import_alembic_or_sqlalchemy() -> None:
    # Worker processes stay small: Alembic and SQLAlchemy (about 22 MB) load
    # only for `pgq migrate` and for callers who bring their own connection.
    code = ("import sys, pgq, pgq.worker, pgq.cli, pgq.queue, pgq.queries; "
            "print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
