"""``pgq snapshot create|list|show|diff|restore|export|import``: thin, over ``pgq.snapshots``.

Registered on the ``pgq`` group by ``pgq/cli.py``; the group's context object
gives the settings (``--database-url``, ``--schema``, ``PGQ_*``). Exit codes as
the rest of the command: 0 success, 1 failed operation, 2 bad usage.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pgq import snapshots
from pgq.errors import ConfigurationError, PgqError, ValidationError
from pgq.settings import Settings
from pgq.snapshots.format import SnapshotInfo

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigurationError, ValidationError) as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except PgqError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _settings(obj: Any) -> Settings:
    settings = obj.settings()
    assert isinstance(settings, Settings)
    return settings


def _time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint="--at") from None
    if when.tzinfo is None:
        raise click.BadParameter("give a time zone (e.g. 2026-12-02T14:02:00+00:00)", param_hint="--at")
    return when


def _row(info: SnapshotInfo) -> list[Any]:
    meta = info.metadata
    return [str(info.id), info.kind, info.origin, info.created_at.isoformat(timespec="seconds"), meta.get("jobs"),
            meta.get("workers"), info.size_bytes, "" if info.base_id is None else str(info.base_id)[:8]]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_HEADERS = ["id", "kind", "origin", "taken at", "jobs", "workers", "bytes", "base"]


@click.group()
def snapshot() -> None:
    """Snapshots of queue state: take, list, compare, restore, move between databases."""


@snapshot.command("create")
@click.option("--kind", type=click.Choice(snapshots.KINDS, case_sensitive=False), default="FULL", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@_errors
def create_command(obj: Any, kind: str, as_json: bool) -> None:
    """Take a snapshot (AUTO: INCREMENTAL, or FULL when one is due)."""
    info = snapshots.create(_settings(obj), kind.upper())
    click.echo(json.dumps(info.as_dict(), indent=2) if as_json else _table(_HEADERS, [_row(info)]))


@snapshot.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@_errors
def list_command(obj: Any, as_json: bool) -> None:
    """Every stored snapshot, oldest first."""
    found = snapshots.list_snapshots(_settings(obj))
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in found], indent=2))
    else:
        click.echo(_table(_HEADERS, [_row(i) for i in found]) if found else "no snapshots")


@snapshot.command("show")
@click.argument("snapshot_id")
@click.pass_obj
@_errors
def show_command(obj: Any, snapshot_id: str) -> None:
    """One snapshot: kind, chain, counts, sizes (JSON)."""
    click.echo(json.dumps(snapshots.show(_settings(obj), snapshot_id).as_dict(), indent=2))


@snapshot.command("diff")
@click.argument("old")
@click.argument("new", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@_errors
def diff_command(obj: Any, old: str, new: str | None, as_json: bool) -> None:
    """What changed from snapshot OLD to snapshot NEW (default: to the database now)."""
    found = snapshots.diff(_settings(obj), old, new)
    if as_json:
        click.echo(json.dumps({"added": found.added, "removed": found.removed, "changed": found.changed}, indent=2))
        return
    for section in found.added:
        for sign, keys in (("+", found.added[section]), ("-", found.removed[section]), ("~", found.changed[section])):
            for key in keys:
                click.echo(f"{sign} {section[:-1] if section != 'edges' else 'edge'} {key.replace(chr(9), ' -> ')}")
    if found.empty():
        click.echo("no difference")


@snapshot.command("restore")
@click.argument("snapshot_id", required=False)
@click.option("--at", "at_text", help="Point in time (ISO 8601 with a zone): latest FULL at or before it + INCREMENTALs.")
@click.option("--file", "file_path", type=click.Path(dir_okay=False), help="Restore an export file.")
@click.option("--from-url", help="Read the snapshot from this database (default: the target).")
@click.option("--policy", type=click.Choice(snapshots.POLICIES), default="skip", show_default=True,
              help="For a job in both: keep ours (skip), take the snapshot's (overwrite), the later updated_at (newest).")
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@_errors
def restore_command(obj: Any, snapshot_id: str | None, at_text: str | None, file_path: str | None, from_url: str | None,
                    policy: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Restore a snapshot (by id, --at a time, or --file) into the database: one transaction."""
    if sum(x is not None for x in (snapshot_id, at_text, file_path)) != 1:
        raise click.UsageError("give exactly one of SNAPSHOT_ID, --at or --file")
    settings = _settings(obj)
    source = settings.replace(database_url=from_url) if from_url else None
    at = _time(at_text)
    if not dry_run and not yes:
        click.confirm(f"Restore into schema {settings.schema!r} with policy {policy!r} (one transaction; "
                      "the jobs it overwrites are locked until it commits)?", abort=True)
    report = snapshots.restore(settings, snapshot_id, at=at, file=file_path, source=source, policy=policy,
                               dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"snapshot_id": str(report.snapshot_id), "dry_run": report.dry_run, "policy": policy,
                               **report.summary()}, indent=2))
        return
    for line in report.lines():
        click.echo(line)
    verb = "would restore" if dry_run else "restored"
    counts = ", ".join(f"{k} {v}" for k, v in report.summary().items())
    click.echo(f"{verb} snapshot {report.snapshot_id} (policy {policy}): {counts}")


@snapshot.command("export")
@click.argument("snapshot_id")
@click.argument("file_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
@_errors
def export_command(obj: Any, snapshot_id: str, file_path: str) -> None:
    """Write a snapshot's whole state (a FULL) to FILE."""
    info = snapshots.export(_settings(obj), snapshot_id, file_path)
    click.echo(f"exported snapshot {info.id} ({info.metadata.get('jobs')} jobs) to {file_path}: {info.size_bytes} bytes")


@snapshot.command("import")
@click.argument("file_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_obj
@_errors
def import_command(obj: Any, file_path: str) -> None:
    """Store the snapshot in FILE here (then `pgq snapshot restore ID`)."""
    info = snapshots.import_file(_settings(obj), file_path)
    click.echo(f"imported snapshot {info.id} ({info.metadata.get('jobs')} jobs, taken {info.created_at.isoformat()})")
