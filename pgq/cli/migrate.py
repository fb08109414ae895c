"""``pgq migrate``: create, upgrade, check or take away pgq's schema (Alembic).

The work is ``pgq.migrate``'s, imported only when the command runs: Alembic
and SQLAlchemy would add ~22 MB to every worker process.
"""

from __future__ import annotations

import sys

import click

from pgq.cli.common import Context, handle_errors


@click.command()
@click.option("--sql", "offline", is_flag=True, help="Print the SQL instead of running it.")
@click.option("--check", is_flag=True, help="Exit 1 unless the database is at the newest revision.")
@click.option("--to", "revision", default=None, help="Target revision [default: head; with --downgrade, required].")
@click.option("--downgrade", is_flag=True, help="Migrate down to --to (base removes pgq's tables, jobs included).")
@click.option("--drop-roles", is_flag=True,
              help="Drop the cluster-wide roles <schema>_producer and <schema>_worker once nothing uses them.")
@click.option("--yes", is_flag=True, help="With --downgrade: do not ask for confirmation.")
@click.pass_obj
@handle_errors
def migrate(obj: Context, offline: bool, check: bool, revision: str | None, downgrade: bool, drop_roles: bool,
            yes: bool) -> None:
    """Create or upgrade pgq's schema (Alembic); --downgrade and --drop-roles take it away."""
    # Imported here: Alembic and SQLAlchemy would add ~22 MB to every worker process.
    from pgq import migrate as migrations

    if sum((offline, check, downgrade, drop_roles)) > 1:
        raise click.UsageError("--sql, --check, --downgrade and --drop-roles go one at a time")
    if drop_roles:
        if revision is not None:
            raise click.UsageError("--drop-roles takes no --to")
        settings = obj.settings()
        dropped, members = migrations.drop_roles(settings)
        click.echo(f"dropped {', '.join(dropped)}" if dropped else
                   f"no role to drop ({' and '.join(migrations.role_names(settings.schema))} do not exist)")
        for role, member in members:
            click.echo(f"  {member} is no longer a member of {role}")
        return
    if downgrade:
        if revision is None:
            raise click.UsageError("--downgrade needs --to REVISION (base removes everything)")
        settings = obj.settings()
        before = migrations.current_revision(settings)
        if not yes:
            click.confirm(f"Migrate schema {settings.schema!r} down from {before} to {revision}"
                          + (" (deleting every job)" if revision == "base" else "") + "?", abort=True)
        migrations.downgrade(settings, revision)
        click.echo(f"schema {settings.schema!r}: {before} -> {migrations.current_revision(settings) or 'base'}")
        return
    revision = revision or "head"
    if offline:
        click.echo(migrations.upgrade_sql(obj.settings(require_db=False), revision))
        return
    settings = obj.settings()
    if check:
        current, head = migrations.current_revision(settings), migrations.head_revision()
        if current != head:
            click.echo(f"schema {settings.schema!r} is at {current or 'nothing (never migrated)'}, "
                       f"pgq needs {head}; run `pgq migrate`")
            sys.exit(1)
        click.echo(f"schema {settings.schema!r} is at {head} (up to date)")
        return
    before = migrations.current_revision(settings)
    migrations.upgrade(settings, revision)
    after = migrations.current_revision(settings)
    click.echo(f"schema {settings.schema!r}: {before or 'empty'} -> {after}")
