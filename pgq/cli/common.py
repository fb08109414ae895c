"""What every ``pgq`` command shares: the context, error handling, output.

``Context`` carries the global options (database URL, schema) and builds
``Settings`` and a ``Queue`` from them; ``handle_errors`` turns pgq errors
into one line and the documented exit code; the ``format_*`` helpers print
tables, ages and JSON. The commands themselves live one group per module.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from pgq.errors import ConfigurationError, DatabaseUnavailable, PgqError, ValidationError
from pgq.queue import Queue
from pgq.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes (README, "The pgq command").
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DATABASE = 3
# How the CLI is told where the database is (said when none is configured).
HOW_TO_CONFIGURE = "pass --database-url URL (before the command: pgq --database-url URL worker ...)"


class Context:
    def __init__(self, database_url: str | None, schema: str | None) -> None:
        self.database_url = database_url
        self.schema = schema

    def settings(self, *, require_db: bool = True, **overrides: Any) -> Settings:
        settings = Settings.from_env(database_url=self.database_url, schema=self.schema, **overrides)
        if require_db:
            settings.require_database_url(HOW_TO_CONFIGURE)
        return settings

    def queue(self) -> Queue:
        return Queue(self.settings(), strict_tasks=False)


def handle_errors(fn: F) -> F:
    """Turn pgq errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, ValidationError) as exc:
            # Bad configuration or a bad argument (an option's value): bad usage.
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        except DatabaseUnavailable as exc:
            # Not a configuration error: a supervisor should start the process again.
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_NO_DATABASE)
        except PgqError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def format_json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
        return str(value)

    return json.dumps(data, default=default, indent=2, sort_keys=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
