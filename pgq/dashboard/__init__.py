"""``pgq dashboard``: a web page over one pgq schema (pgq[dashboard]: Starlette, Jinja2, uvicorn).

Server-rendered pages (overview, jobs, workers, dead letters, schedules and
snapshots) with charts drawn as inline SVG: no script, nothing fetched from
elsewhere. Reads are SQLAlchemy Core selects on ``pgq.schema``'s tables
(``queries``); every action is an existing ``pgq.Queue`` call, hence a stored
function (``actions``), behind a token or basic auth and a CSRF check
(``security``). The database login needs ``<schema>_viewer`` (and
``<schema>_operator`` for the actions). The pages live in ``app``.
"""

from pgq.dashboard.app import create_app
from pgq.dashboard.security import Access

__all__ = ["Access", "create_app"]
