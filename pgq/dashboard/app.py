"""The dashboard's web app (Starlette, Jinja2 templates rendered on the server).

Pages: overview (``/``), jobs (``/jobs``, ``/jobs/{id}``), workers
(``/workers``), the dead letter queue (``/dlq``) and schedules, snapshots and
paused queues (``/schedules``). Their reads are ``queries.DashboardReads``'
(one read-only transaction per page), charts are ``charts``' inline SVG,
actions are ``actions``' (a ``pgq.Queue`` call each) behind ``security``'s
checks. The app holds no state of its own besides its engine, queue and
templates; ``pgq dashboard`` serves it with uvicorn.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgq.dashboard import actions, charts
from pgq.dashboard.queries import CHART_MINUTES, SEARCH_WINDOW, DashboardReads, JobFilter
from pgq.dashboard.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Access
from pgq.db import connect as pgq_connect
from pgq.db import translated
from pgq.errors import JobNotFound, PgqError, ValidationError
from pgq.health import analysis
from pgq.health.queries import HealthQueries
from pgq.job import JobStatus, validate_queue_name
from pgq.queue import Queue
from pgq.settings import Settings

#: Security headers on every response: nothing runs but what the page is (no script at all).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def make_engine(settings: Settings) -> Engine:
    """A small pool of psycopg connections for the pages (pgq's clear error for a wrong DSN)."""
    url = settings.require_database_url()
    return create_engine("postgresql+psycopg://", creator=lambda: pgq_connect(url, autocommit=False),
                         pool_size=4, max_overflow=4, pool_pre_ping=True)


class Dashboard:
    """The pages and actions of one pgq schema."""

    def __init__(self, settings: Settings, access: Access, engine: Engine | None = None) -> None:
        self.settings = settings
        self.access = access
        self.engine = engine or make_engine(settings)
        self.reads = DashboardReads(self.engine, settings.schema)
        self.queue = Queue(settings, strict_tasks=False)
        self.templates = Environment(loader=PackageLoader("pgq.dashboard", "templates"),
                                     autoescape=select_autoescape(default=True), trim_blocks=True,
                                     lstrip_blocks=True)
        self.templates.filters["ago"] = _ago
        self.templates.filters["when"] = _when

    def close(self) -> None:
        self.queue.close()
        self.engine.dispose()

    # ------------------------------------------------------------ rendering
    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None
        if cookie is None:
            cookie = self.access.new_csrf_cookie()
        body = self.templates.get_template(name).render(
            request=request, access=self.access, csrf_field=CSRF_FIELD, csrf_token=self.access.csrf_token(cookie),
            signed_in=self.signed_in(request), message=request.query_params.get("msg"), schema=self.settings.schema,
            **context)
        response = HTMLResponse(body, status_code=status_code)
        if fresh:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    def error(self, request: Request, status_code: int, message: str) -> Response:
        response = self.render(request, "error.html", status_code, error=message)
        if status_code == 401 and self.access.uses_basic_auth:
            response.headers["WWW-Authenticate"] = 'Basic realm="pgq dashboard", charset="UTF-8"'
        return response

    def signed_in(self, request: Request) -> bool:
        return self.access.authorised(request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE))

    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one read-only transaction, pgq's errors translated."""
        with translated(self.settings.database_url), self.reads.connect() as conn:
            try:
                return fn(conn, *args)
            finally:
                conn.rollback()

    # ------------------------------------------------------------ pages
    def overview(self, request: Request) -> Response:
        now, depth, dead, flow, alerts = self.read(lambda c: (
            self.reads.now(c), self.reads.depth(c), self.reads.dead_letters_per_queue(c), self.reads.throughput(c),
            self.reads.alerts(c)))
        queues: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return queues.setdefault(name, {"by_status": {}, "cells": {}, "oldest": None, "dead_letters": 0,
                                            "completed_hour": 0})

        for row in depth:
            q = entry(row.queue)
            q["by_status"][row.status] = q["by_status"].get(row.status, 0) + row.jobs
            q["cells"][(row.status, row.priority)] = row.jobs
            if row.oldest_due_seconds is not None:
                q["oldest"] = max(q["oldest"] or 0.0, float(row.oldest_due_seconds))
        for name, count in dead.items():
            entry(name)["dead_letters"] = count
        done: dict[str, dict[int, float]] = {}
        died: dict[str, dict[int, float]] = {}
        pickup: dict[str, list[tuple[float, float]]] = {}
        for row in flow:
            minute = int(row.minute)
            entry(row.queue)["completed_hour"] += row.completed
            done.setdefault(row.queue, {})[minute] = float(row.completed)
            if row.dead:
                died.setdefault(f"{row.queue} (dead)", {})[minute] = float(row.dead)
            if row.pickup_seconds is not None:
                pickup.setdefault(row.queue, []).append((minute + 0.5, float(row.pickup_seconds)))
        # Counts per minute, 0 where nothing finished (a line across a gap would invent jobs).
        finished = {name: [(m + 0.5, counts.get(m, 0.0)) for m in range(CHART_MINUTES)]
                    for name, counts in {**done, **died}.items()}
        statuses = [s.value for s in JobStatus if s.value in charts.STATUS_COLOURS]
        return self.render(
            request, "overview.html", now=now, queues=dict(sorted(queues.items())), statuses=statuses,
            alerts=alerts,
            depth_chart=charts.stacked_bars({name: q["by_status"] for name, q in sorted(queues.items())},
                                            title="Depth by status"),
            throughput_chart=charts.line_chart(finished, title="Jobs finished per minute"),
            latency_chart=charts.line_chart(pickup, title="Pickup latency (mean, per minute)", unit=" s"))

    def jobs(self, request: Request) -> Response:
        params = request.query_params
        try:
            flt = _job_filter(params)
        except ValidationError as exc:
            return self.error(request, 400, str(exc))
        page = self.read(self.reads.search_jobs, flt)
        shown = {k: v for k, v in params.items() if k != "before" and v}
        older = f"/jobs?{urlencode({**shown, 'before': page.next_before})}" if page.next_before else None
        return self.render(request, "jobs.html", page=page, filter=flt, params=shown, older=older,
                           statuses=[s.value for s in JobStatus], window=SEARCH_WINDOW)

    def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]

        def load(conn: Any) -> Any:
            job = self.reads.job(conn, job_id)
            if job is None:
                return None
            parents, children = self.reads.relatives(conn, job_id)
            return (job, self.reads.executions(conn, job_id), self.reads.dead_letter(conn, job_id), parents,
                    children, self.reads.blocker(conn, job_id))

        loaded = self.read(load)
        if loaded is None:
            return self.error(request, 404, f"job {job_id} does not exist (or was pruned)")
        job, executions, dead_letter, parents, children, blocker = loaded
        similar, similar_note = self._similar(job)
        return self.render(request, "job.html", job=job, executions=executions, dead_letter=dead_letter,
                           parents=parents, children=children, blocker=blocker, similar=similar,
                           similar_note=similar_note)

    def _similar(self, job: Any) -> tuple[list[Any], str | None]:
        """Similar failures from the execution memory, or why there are none to show."""
        if not self.settings.memory_enabled:
            return [], "The execution memory is off (PGQ_MEMORY / PGQ_QDRANT_URL): no similar failures to show."
        if job.last_error is None:
            return [], "This job has not failed."
        from pgq.memory.search import Memory

        try:
            with Memory(self.queue) as memory:
                return memory.similar(job.id, k=5), None
        except PgqError as exc:
            return [], f"The execution memory could not answer: {exc}"

    def workers(self, request: Request) -> Response:
        def load(conn: Any) -> Any:
            rows = self.reads.workers(conn)
            health = {h.worker_id: h for h in analysis.read(conn, HealthQueries(self.settings.schema))}
            series = self.reads.health_series(conn, [r.id for r in rows if r.status in ("active", "draining")])
            return rows, health, series

        rows, health, series = self.read(load)
        trend = charts.line_chart({f"{r.hostname}:{r.pid}": series[r.id] for r in rows if r.id in series},
                                  title="Health score, last hour", y_max=1.0)
        return self.render(request, "workers.html", workers=rows, health=health, trend_chart=trend)

    def dlq(self, request: Request) -> Response:
        queue_name = request.query_params.get("queue") or None
        if queue_name is not None:
            try:
                validate_queue_name(queue_name)
            except ValidationError as exc:
                return self.error(request, 400, str(exc))
        letters = self.read(self.reads.dead_letters, queue_name)
        # Clustering costs about 1 ms per dead job: only when asked for.
        clustered = request.query_params.get("clusters") == "1"
        clusters: list[Any] = []
        clusters_note = None
        if clustered:
            try:
                clusters = actions.clusters(self.queue)
            except PgqError as exc:
                clusters_note = f"Could not cluster the dead letters: {exc}"
        return self.render(request, "dlq.html", letters=letters, clusters=clusters[:20], clustered=clustered,
                           clusters_note=clusters_note, queue_name=queue_name, cluster_limit=actions.CLUSTER_LIMIT)

    def schedules(self, request: Request) -> Response:
        schedules, snapshots, paused = self.read(lambda c: (
            self.reads.schedules(c), self.reads.snapshots(c), self.reads.paused(c)))
        return self.render(request, "schedules.html", schedules=schedules, snapshots=snapshots, paused=paused)

    def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html")

    # ------------------------------------------------------------ actions
    async def act(self, request: Request, perform: Callable[[FormData], str], back: str) -> Response:
        """Check, in order: a known action, actions on, credentials, same origin, CSRF; then perform and redirect."""
        if request.path_params["verb"] not in _VERBS[request.url.path.split("/")[1]]:
            return self.error(request, 404, "There is no such action.")
        if not self.access.actions_enabled:
            return self.error(request, 403, "This dashboard is read-only: its operator set no PGQ_DASHBOARD_TOKEN "
                                            "(or PGQ_DASHBOARD_USER and PGQ_DASHBOARD_PASSWORD).")
        if not self.signed_in(request):
            return self.error(request, 401, "Actions need the dashboard's token (sign in) or its login.")
        form = await request.form()
        if not _same_origin(request) or not self.access.csrf_valid(
                request.cookies.get(CSRF_COOKIE), _text(form.get(CSRF_FIELD))):
            return self.error(request, 403, "The form's CSRF token is missing or invalid: reload the page and try "
                                            "again.")
        try:
            done = await run_in_threadpool(perform, form)
        except JobNotFound as exc:
            return self.error(request, 404, str(exc))
        except PgqError as exc:
            return self.error(request, 400, f"Nothing was changed: {exc}")
        return RedirectResponse(f"{back}?{urlencode({'msg': done})}", status_code=303)

    async def dlq_action(self, request: Request) -> Response:
        verb = request.path_params["verb"]

        def perform(form: FormData) -> str:
            cluster = _text(form.get("cluster"))
            ids = (actions.cluster_job_ids(self.queue, cluster) if cluster
                   else actions.parse_ids([_text(v) for v in form.getlist("job_id")]))
            if verb == "requeue":
                return f"Requeued {len(actions.requeue(self.queue, ids))} dead job(s)."
            return f"Purged {len(actions.purge(self.queue, ids))} dead job(s)."

        return await self.act(request, perform, "/dlq")

    async def worker_action(self, request: Request) -> Response:
        worker, verb = request.path_params["worker"], request.path_params["verb"]

        def perform(form: FormData) -> str:
            if verb == "drain":
                asked = actions.drain(self.queue, worker)
                return f"Worker {worker} drains." if asked else f"Worker {worker} was draining already."
            asked = actions.evacuate(self.queue, worker, _text(form.get("reason")))
            return f"Worker {worker} is evacuated." if asked else f"Worker {worker} was evacuated already."

        return await self.act(request, perform, "/workers")

    async def queue_action(self, request: Request) -> Response:
        verb = request.path_params["verb"]

        def perform(form: FormData) -> str:
            name = _text(form.get("queue"))
            if verb == "pause":
                return f"Queue {name} is paused." if actions.pause(self.queue, name) else f"{name} was paused already."
            return f"Queue {name} is resumed." if actions.resume(self.queue, name) else f"{name} was not paused."

        return await self.act(request, perform, "/schedules")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not self.access.csrf_valid(request.cookies.get(CSRF_COOKIE), _text(form.get(CSRF_FIELD))):
            return self.error(request, 403, "The form's CSRF token is missing or invalid: reload the page.")
        if self.access.token is None or not self.access.token_matches(_text(form.get("token"))):
            return self.error(request, 401, "That is not the dashboard's token.")
        response = RedirectResponse("/?msg=Signed+in.", status_code=303)
        response.set_cookie(SESSION_COOKIE, self.access.session_value(), httponly=True, samesite="strict")
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not self.access.csrf_valid(request.cookies.get(CSRF_COOKIE), _text(form.get(CSRF_FIELD))):
            return self.error(request, 403, "The form's CSRF token is missing or invalid: reload the page.")
        response = RedirectResponse("/?msg=Signed+out.", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def create_app(settings: Settings, access: Access | None = None, *, engine: Engine | None = None) -> Starlette:
    """The dashboard as an ASGI app (serve it with uvicorn, as ``pgq dashboard`` does).

    Args:
        settings: the database and schema to show (``Settings.from_env()`` or keywords).
        access: who may act (default: nobody, read-only).
        engine: a SQLAlchemy engine for the reads (default: a small pool on ``settings.database_url``).
    """
    dash = Dashboard(settings, access or Access(), engine)
    static = resources.files("pgq.dashboard") / "static"
    routes = [
        Route("/", dash.overview),
        Route("/jobs", dash.jobs),
        Route("/jobs/{job_id:int}", dash.job),
        Route("/workers", dash.workers),
        Route("/workers/{worker}/{verb:str}", dash.worker_action, methods=["POST"]),
        Route("/dlq", dash.dlq),
        Route("/dlq/{verb:str}", dash.dlq_action, methods=["POST"]),
        Route("/schedules", dash.schedules),
        Route("/queues/{verb:str}", dash.queue_action, methods=["POST"]),
        Route("/login", dash.login_page),
        Route("/login", dash.login, methods=["POST"]),
        Route("/logout", dash.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        dash.close()

    async def unavailable(request: Request, exc: Exception) -> Response:
        # A page whose reads failed (the database is down, a role lacks a grant): say why, no traceback.
        return dash.error(request, 503, f"The database did not answer this page: {exc}")

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={PgqError: unavailable})
    app.state.dashboard = dash
    return app


class SecurityHeaders:
    """ASGI middleware: ``HEADERS`` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


# The actions each route knows (anything else is a 404, before any check).
_VERBS: Mapping[str, tuple[str, ...]] = {"dlq": ("requeue", "purge"), "workers": ("drain", "evacuate"),
                                         "queues": ("pause", "resume")}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _same_origin(request: Request) -> bool:
    """A browser's Origin (when sent) names this host: a form posted from another site is refused."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def _parse_time(name: str, value: str | None) -> dt.datetime | None:
    """A form's date-time (``YYYY-MM-DDTHH:MM``, UTC unless it names an offset)."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be a date and time (YYYY-MM-DDTHH:MM), got {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _job_filter(params: Mapping[str, str]) -> JobFilter:
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        raise ValidationError(f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}")
    queue = params.get("queue") or None
    if queue is not None:
        validate_queue_name(queue)
    before = params.get("before") or None
    if before is not None and (not before.isdigit() or int(before) > 2**63 - 1):
        raise ValidationError(f"before must be a job id, got {before!r}")
    for name in ("task", "unique_key", "error"):
        if len(params.get(name) or "") > 200:
            raise ValidationError(f"{name} is at most 200 characters")
    return JobFilter(queue=queue, task=params.get("task") or None, status=status,
                     unique_key=params.get("unique_key") or None, error=params.get("error") or None,
                     created_from=_parse_time("created from", params.get("created_from")),
                     created_to=_parse_time("created to", params.get("created_to")),
                     before=None if before is None else int(before))


def _ago(seconds: float | None) -> str:
    """``93`` -> ``1 min 33 s``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
