"""``pgq dashboard``: serve the web dashboard (pgq[dashboard]) with uvicorn.

Parses the options (every one also from ``PGQ_DASHBOARD_*``), builds the app
with ``pgq.dashboard.create_app`` and serves it; the pages are
``pgq.dashboard``'s.
"""

from __future__ import annotations

import signal
from types import FrameType

import click

from pgq.cli.common import Context, handle_errors
from pgq.errors import ConfigurationError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="PGQ_DASHBOARD_HOST",
              help="Address to bind [env: PGQ_DASHBOARD_HOST]; 0.0.0.0 exposes it to the network.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), envvar="PGQ_DASHBOARD_PORT",
              help="TCP port [env: PGQ_DASHBOARD_PORT].")
@click.option("--token", envvar="PGQ_DASHBOARD_TOKEN", show_envvar=True,
              help="Switches the actions on: the token operators sign in with (16+ characters). "
                   "Prefer the variable: options show in `ps`.")
@click.option("--user", envvar="PGQ_DASHBOARD_USER", show_envvar=True,
              help="Switches the actions on with basic auth: the login (with --password).")
@click.option("--password", envvar="PGQ_DASHBOARD_PASSWORD", show_envvar=True,
              help="The basic-auth password (8+ characters).")
@click.pass_obj
@handle_errors
def dashboard(obj: Context, host: str, port: int, token: str | None, user: str | None, password: str | None) -> None:
    """Serve the web dashboard (read-only unless a token or a login is set)."""
    try:
        import uvicorn

        from pgq.dashboard import Access, create_app
    except ImportError as exc:
        raise ConfigurationError(f"the dashboard needs its extra: pip install 'pgq[dashboard]' ({exc})") from exc
    access = Access(token=token or None, username=user or None, password=password or None)
    app = create_app(obj.settings(), access)
    mode = "read-only" if not access.actions_enabled else "actions need the token" if token else "actions need the login"
    click.echo(f"pgq dashboard on http://{host}:{port}/ ({mode})")
    # uvicorn stops gracefully on SIGTERM or SIGINT, then raises the signal again for the
    # handler it found installed: this one, so that a stop asked for exits 0 (as `pgq worker`).
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_asked)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _exit_asked(_signal: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
