"""Locating the folders pgq ships besides its code: the SQL under ``db/``, the
Alembic ``migrations/`` and the ``bench/`` scenarios.

In a checkout they sit at the top of the repository; in an installed wheel they
are shipped inside the package as ``pgq/_sql``, ``pgq/_migrations`` and ``pgq/_bench``. This
module finds them in either place and reads files; it never executes anything.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _locate(installed: str, checkout: str) -> Path:
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"pgq cannot find its {checkout}/ folder (looked in {_PACKAGE / installed} and "
        f"{_PACKAGE.parent / checkout}); reinstall pgq"
    )


@cache
def sql_dir() -> Path:
    """The ``db/`` folder: stored functions, triggers, views and schema.sql."""
    return _locate("_sql", "db")


@cache
def migrations_dir() -> Path:
    """The Alembic ``migrations/`` folder."""
    return _locate("_migrations", "migrations")


@cache
def bench_dir() -> Path:
    """The ``bench/`` folder of load-test scenarios run by ``pgq bench``."""
    return _locate("_bench", "bench")


def read_sql(relative: str) -> str:
    """Return the text of ``db/<relative>``, e.g. ``functions/fail_job/001.sql``."""
    path = (sql_dir() / relative).resolve()
    if sql_dir().resolve() not in path.parents:
        raise ValueError(f"{relative!r} is outside the db/ folder")
    return path.read_text(encoding="utf-8")


_REVISION = re.compile(r"""^revision\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision\s*=\s*(?:["']([^"']+)["']|None)""", re.MULTILINE)


@cache
def head_revision() -> str:
    """The newest migration revision this pgq ships, read from ``migrations/versions``.

    The same answer as Alembic's script directory (a test holds them equal),
    without importing Alembic and SQLAlchemy into every worker process: that
    import alone costs a process about 22 MB.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            raise ValueError(f"{path.name}: no revision/down_revision line")
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    if len(heads) != 1:
        raise ValueError(f"migrations must have exactly one head, found {sorted(heads)}")
    return heads.pop()
