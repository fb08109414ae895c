"""``pgq dashboard`` in a real browser: headless Chromium (Debian's) driven by Selenium.

One database, one uvicorn server and one browser per module. The server logs
in as a role that holds only ``pgq_viewer`` and ``pgq_operator`` (the roles of
revision 0015), so every page here also proves those grants suffice. Checked:
the pages render the seeded data, the charts' SVG elements exist, a requeue
through the page changes the database, and an action without the token or
with a missing or forged CSRF token is refused and changes nothing. Another
server on the same database, logged in with ``pgq_viewer`` alone, renders every
page and cannot change anything. Screenshots go to ``$PGQ_TEST_DASHBOARD_SCREENSHOTS``
(docs/dashboard/ holds the committed ones) or to a temporary directory.

A missing chromium or chromedriver fails the module: `apt-get install chromium chromium-driver`.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

import factories
from pgq.dashboard import Access, create_app
import pgq
from pgq import migrate, snapshots
from pgq.settings import Settings

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(16)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# ---------------------------------------------------------------- the world the pages show


@dataclass(frozen=True)
class Seeded:
    dead: list[int]  # dead jobs of the SMTP cluster (open dead letters)
    other_dead: int  # a dead job of another cluster
    failed_child: int  # a waiting job whose parent is dead[0]
    parent: int
    traced: int  # a dead job with a traceback in its history
    worker: uuid.UUID
    completed: int


def seed(conn: psycopg.Connection[Any], db_url: str) -> Seeded:
    now = factories.db_now(conn)
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    worker = factories.insert_worker(conn, hostname="web-1", pid=101, queues=["emails", "reports"],
                                     capacity=8, current_load=3, health_score=0.55)
    factories.insert_worker(conn, hostname="web-2", pid=102, queues=["emails"], health_score=0.95)
    for minute in range(3, 60, 3):  # 57 to 3 minutes ago: 19 samples inside the hour
        conn.execute("INSERT INTO pgq.worker_health_logs (worker_id, metric_type, metric_value, logged_at,"
                     " health_score, interval_seconds, jobs_completed, jobs_failed)"
                     " VALUES (%s, 'heartbeat', %s, %s, %s, 30, 10, 1)",
                     (worker, 1 - minute / 120, ago(60 - minute), 1 - minute / 120))
    completed = 0
    for minute in range(1, 58, 4):
        for _ in range(1 + minute % 3):
            completed = factories.insert_job(conn, queue="emails", task="send_email", status="completed",
                                             run_at=ago(minute + 1), started_at=ago(minute) - dt.timedelta(seconds=20),
                                             finished_at=ago(minute), worker_id=worker, result={"sent": True})
        factories.insert_job(conn, queue="reports", task="build_report", status="completed", run_at=ago(minute),
                             started_at=ago(minute), finished_at=ago(minute), worker_id=worker)
    for priority in (1, 3, 5):
        factories.insert_jobs(conn, 3 + priority, queue="emails", task="send_email", priority=priority)
    factories.insert_job(conn, queue="reports", task="build_report", status="running", worker_id=worker)
    factories.insert_job(conn, queue="reports", task="build_report", status="retrying", run_at=now + dt.timedelta(hours=1))
    dead = []
    for n in range(4):
        job = factories.insert_job(conn, queue="emails", task="send_email", status="dead", payload={"to": f"u{n}@x.org"},
                                   last_error=f"SMTPServerDisconnected: Connection unexpectedly closed (try {n})",
                                   created_at=ago(40 - n), run_at=ago(31 - n), finished_at=ago(30 - n),
                                   unique_key=f"welcome:{n}")
        factories.insert_execution(conn, job, attempt=3, worker_id=worker, started_at=ago(30 - n) - dt.timedelta(seconds=2),
                                   finished_at=ago(30 - n), error_type="SMTPServerDisconnected",
                                   error_message=f"Connection unexpectedly closed (try {n})")
        factories.insert_dead_letter(conn, job)
        dead.append(job)
    other_dead = factories.insert_job(conn, queue="reports", task="build_report", status="dead",
                                      last_error="KeyError: 'customer_id'", finished_at=ago(10))
    factories.insert_dead_letter(conn, other_dead)
    traced = dead[0]
    conn.execute("UPDATE pgq.job_executions SET traceback = %s WHERE job_id = %s",
                 ('Traceback (most recent call last):\n  File "app.py", line 12, in send_email\n'
                  "smtplib.SMTPServerDisconnected: Connection unexpectedly closed", traced))
    parent = factories.insert_job(conn, queue="reports", task="fetch_data", status="queued")
    child = factories.insert_job(conn, queue="reports", task="build_report", status="waiting")
    conn.execute("INSERT INTO pgq.job_dependencies (parent_id, child_id) VALUES (%s, %s)", (parent, child))
    conn.execute("SELECT pgq.pause_queue('reports')")
    conn.execute("INSERT INTO pgq.schedules (name, cron, task, queue, payload, next_tick)"
                 " VALUES ('nightly-report', '0 3 * * *', 'build_report', 'reports', %s, %s)",
                 (Jsonb({}), now + dt.timedelta(hours=5)))
    snapshots.create(Settings(database_url=db_url), "FULL")
    return Seeded(dead, other_dead, child, parent, traced, worker, completed)


# ---------------------------------------------------------------- fixtures


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(settings: Settings, access: Access) -> Served:
    """The dashboard on a free local port, in a thread; returns once it accepts connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, access), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    factories.eventually(lambda: server.started, "the dashboard to start")
    return Served(f"http://127.0.0.1:{port}", server, thread)


@dataclass(frozen=True)
class World:
    admin: psycopg.Connection[Any]
    db_url: str
    seeded: Seeded
    login: Callable[..., str]  # member roles -> DSN of a new LOGIN role


@pytest.fixture(scope="module")
def world(clone_pool: Any, pg_server: Any) -> Iterator[World]:
    name = clone_pool.take()
    db_url = pg_server.url_for(name)
    made: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as admin:
        def login(*roles: str) -> str:
            role = f"pgqt_dash_{uuid.uuid4().hex[:10]}"
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            made.append(role)
            for member_of in roles:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(role)))
            return make_conninfo(db_url, user=role)

        try:
            yield World(admin, db_url, seed(admin, db_url), login)
        finally:
            for role in made:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    clone_pool.give_back(name)


@pytest.fixture(scope="module")
def site(world: World) -> Iterator[str]:
    """The dashboard with actions on (the token), logged in as pgq_viewer + pgq_operator only."""
    dsn = world.login("pgq_viewer", "pgq_operator")
    served = serve(Settings(database_url=dsn), Access(token=TOKEN))
    yield served.url
    served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(f"the dashboard's browser tests need {' and '.join(missing)}: "
                    "apt-get install -y chromium chromium-driver (.ci/run installs them)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("PGQ_TEST_DASHBOARD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def submit(button: WebElement) -> None:
    """Click a button that loads a page, and return once the browser shows the new one."""
    driver = button.parent
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 60).until(staleness_of(old))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms carry (for the client's own cookie)."""
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def status_of(world: World, job_id: int) -> str:
    return str(factories.job(world.admin, job_id)["status"])


def sign_in(driver: WebDriver, site: str) -> None:
    driver.get(f"{site}/login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    submit(driver.find_element(By.ID, "sign-in"))
    assert "Signed in." in driver.find_element(By.ID, "message").text


# ---------------------------------------------------------------- pages


def test_pages_render_the_database_and_the_charts_draw(world: World, site: str, browser: WebDriver,
                                                       shots: Path) -> None:
    s = world.seeded
    browser.get(site)
    rows = {r.get_attribute("data-queue"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#queues tr[data-queue]")}
    assert set(rows) == {"emails", "reports"}
    # emails: 4+6+8 queued (priorities 1, 3, 5), 4 dead letters; the completed count is the seeded hour's.
    assert rows["emails"].split()[1:3] == ["0", "18"]
    assert " 4 " in f" {rows['emails']} "
    # Charts: a bar per status part, a line per queue for throughput and pickup latency.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#depth-chart svg rect.bar")) >= 4
    lines = browser.find_elements(By.CSS_SELECTOR, "#throughput-chart svg polyline.series")
    assert {e.get_attribute("data-series") for e in lines} >= {"emails", "reports"}
    assert len(lines[0].get_attribute("points").split()) > 5
    assert browser.find_elements(By.CSS_SELECTOR, "#latency-chart svg polyline.series")
    browser.save_screenshot(str(shots / "overview.png"))

    # Search: text in the error, then a filter that matches nothing.
    browser.get(f"{site}/jobs?error=unexpectedly+closed&status=dead")
    assert sorted(int(t) for t in texts(browser, "#jobs tbody td:first-child")) == sorted(s.dead)
    browser.get(f"{site}/jobs?unique_key=welcome:2")
    assert texts(browser, "#jobs tbody td:first-child") == [str(s.dead[2])]
    browser.get(f"{site}/jobs?queue=emails")
    browser.save_screenshot(str(shots / "jobs.png"))

    # A job's page: its attempts with the traceback, payload, why a job waits, parents and children.
    browser.get(f"{site}/jobs/{s.traced}")
    attempts = browser.find_element(By.ID, "attempts").text
    assert "SMTPServerDisconnected" in attempts and "web-1" not in attempts  # the worker's id, not its name
    assert "smtplib.SMTPServerDisconnected" in browser.find_element(By.CSS_SELECTOR, "#attempts pre").get_attribute(
        "textContent")
    assert '"to": "u0@x.org"' in browser.find_element(By.ID, "payload").text
    assert "Moved to the dead letter queue" in browser.find_element(By.ID, "dead-letter").text
    assert "memory is off" in browser.find_element(By.ID, "similar").text
    browser.save_screenshot(str(shots / "job.png"))
    browser.get(f"{site}/jobs/{s.failed_child}")
    assert "waiting on parent" in browser.find_element(By.ID, "blocker").text
    assert str(s.parent) in browser.find_element(By.ID, "parents").text
    browser.get(f"{site}/jobs/{s.parent}")
    assert str(s.failed_child) in browser.find_element(By.ID, "children").text
    assert "queue paused" in browser.find_element(By.ID, "blocker").text

    # Workers: the health trend is drawn from the samples.
    browser.get(f"{site}/workers")
    trend = browser.find_elements(By.CSS_SELECTOR, "#health-chart svg polyline.series")
    assert [e.get_attribute("data-series") for e in trend] == ["web-1:101"]
    assert len(trend[0].get_attribute("points").split()) == 19
    row = browser.find_element(By.CSS_SELECTOR, f'#workers tr[data-worker="{s.worker}"]').text
    assert "3/8" in row and "0.55" in row
    browser.save_screenshot(str(shots / "workers.png"))

    # Dead letters: the SMTP failures are one cluster (clustered on request).
    browser.get(f"{site}/dlq")
    assert not browser.find_elements(By.ID, "clusters")
    submit(browser.find_element(By.ID, "show-clusters"))
    clusters = {int(r.get_attribute("data-cluster")): r.text for r in browser.find_elements(By.CSS_SELECTOR,
                                                                                          "#clusters tr[data-cluster]")}
    assert clusters[s.dead[0]].split()[1] == "4" and s.other_dead in clusters
    browser.save_screenshot(str(shots / "dlq.png"))

    browser.get(f"{site}/schedules")
    assert "reports" in browser.find_element(By.ID, "paused").text
    assert "nightly-report" in browser.find_element(By.ID, "schedules").text
    assert "FULL" in browser.find_element(By.ID, "snapshots").text  # the list, read without its body
    for name in ("overview", "jobs", "job", "workers", "dlq"):
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- actions


def test_an_action_without_the_token_is_refused_and_changes_nothing(world: World, site: str,
                                                                      browser: WebDriver) -> None:
    browser.delete_all_cookies()
    victim = world.seeded.dead[3]
    browser.get(f"{site}/dlq")
    browser.find_element(By.ID, f"select-{victim}").click()
    submit(browser.find_element(By.ID, "requeue-selected"))
    assert "need the dashboard's token" in browser.find_element(By.ID, "error").text
    assert status_of(world, victim) == "dead"
    # A wrong token does not sign in either.
    browser.get(f"{site}/login")
    browser.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    submit(browser.find_element(By.ID, "sign-in"))
    assert "not the dashboard's token" in browser.find_element(By.ID, "error").text


def test_a_missing_or_forged_csrf_token_is_refused_and_changes_nothing(world: World, site: str,
                                                                        browser: WebDriver) -> None:
    victim = world.seeded.dead[3]
    sign_in(browser, site)
    for forge in ("arguments[0].value = 'f'.repeat(64)", "arguments[0].remove()"):
        browser.get(f"{site}/dlq")
        field = browser.find_element(By.CSS_SELECTOR, "#dlq-form input[name=csrf_token]")
        browser.execute_script(forge, field)
        browser.find_element(By.ID, f"select-{victim}").click()
        submit(browser.find_element(By.ID, "purge-selected"))
        assert "CSRF token is missing or invalid" in browser.find_element(By.ID, "error").text
        assert status_of(world, victim) == "dead"
    # The browser's own token, with another browser's cookie, is refused too (the token is bound to it).
    cookie = browser.get_cookie("pgq_csrf")
    assert cookie is not None
    browser.get(f"{site}/dlq")
    browser.delete_cookie("pgq_csrf")
    browser.add_cookie({"name": "pgq_csrf", "value": "0" * 32, "path": "/"})
    browser.find_element(By.ID, f"select-{victim}").click()
    submit(browser.find_element(By.ID, "purge-selected"))
    assert "CSRF" in browser.find_element(By.ID, "error").text
    assert status_of(world, victim) == "dead"


def test_a_requeue_through_the_page_changes_the_database(world: World, site: str, browser: WebDriver) -> None:
    s = world.seeded
    sign_in(browser, site)
    browser.get(f"{site}/dlq")
    for job in s.dead[:2]:
        browser.find_element(By.ID, f"select-{job}").click()
    submit(browser.find_element(By.ID, "requeue-selected"))
    assert browser.find_element(By.ID, "message").text == "Requeued 2 dead job(s)."
    assert [status_of(world, j) for j in s.dead] == ["queued", "queued", "dead", "dead"]
    assert factories.executions(world.admin, s.dead[0])  # the history stays
    # The other cluster, purged from its row: the job and its dead letter are gone.
    browser.get(f"{site}/dlq?clusters=1")
    submit(browser.find_element(By.CSS_SELECTOR, f'#clusters tr[data-cluster="{s.other_dead}"] button.danger'))
    assert browser.find_element(By.ID, "message").text == "Purged 1 dead job(s)."
    assert world.admin.execute("SELECT count(*) FROM pgq.jobs WHERE id = %s", (s.other_dead,)).fetchone() == (0,)
    # Resume the paused queue, then evacuate a worker, through their pages.
    browser.get(f"{site}/schedules")
    submit(browser.find_element(By.CSS_SELECTOR, "#paused button.act"))
    assert "Queue reports is resumed." in browser.find_element(By.ID, "message").text
    assert world.admin.execute("SELECT count(*) FROM pgq.paused_queues").fetchone() == (0,)
    browser.get(f"{site}/workers")
    row = browser.find_element(By.CSS_SELECTOR, f'#workers tr[data-worker="{s.worker}"]')
    row.find_element(By.NAME, "reason").send_keys("health 0.55 and falling")
    submit(row.find_element(By.CSS_SELECTOR, "button.danger"))
    assert "is evacuated" in browser.find_element(By.ID, "message").text
    evacuated = factories.worker(world.admin, s.worker)
    assert (evacuated["status"], evacuated["evacuation_reason"]) == ("draining", "health 0.55 and falling")


def test_a_selection_that_changed_after_the_page_was_read_changes_only_what_is_still_dead(
    world: World, site: str, browser: WebDriver,
) -> None:
    kept, taken = world.seeded.dead[2], world.seeded.dead[3]
    sign_in(browser, site)
    browser.get(f"{site}/dlq")
    for job in (kept, taken):
        browser.find_element(By.ID, f"select-{job}").click()
    # Between the page's read and the click, someone else requeues one of the selection.
    world.admin.execute("SELECT * FROM pgq.requeue_dead_jobs(ARRAY[%s]::bigint[])", (taken,))
    submit(browser.find_element(By.ID, "requeue-selected"))
    assert "Nothing was changed" in browser.find_element(By.ID, "error").text
    assert (status_of(world, kept), status_of(world, taken)) == ("dead", "queued")
    # A purge of a job requeued meanwhile leaves it alone: only dead jobs are purged.
    browser.get(f"{site}/dlq")
    browser.find_element(By.ID, f"select-{kept}").click()
    world.admin.execute("SELECT * FROM pgq.requeue_dead_jobs(ARRAY[%s]::bigint[])", (kept,))
    submit(browser.find_element(By.ID, "purge-selected"))
    assert browser.find_element(By.ID, "message").text == "Purged 0 dead job(s)."
    assert status_of(world, kept) == "queued"


# ---------------------------------------------------------------- roles, read-only, bad input


def test_the_viewer_role_renders_every_page_and_cannot_change_anything(world: World) -> None:
    served = serve(Settings(database_url=world.login("pgq_viewer")), Access(token=TOKEN))
    dead = factories.insert_job(world.admin, status="dead", last_error="boom")
    factories.insert_dead_letter(world.admin, dead)
    before = factories.snapshot(world.admin)
    try:
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for path in ("/", "/jobs", f"/jobs/{world.seeded.traced}", "/workers", "/dlq", "/schedules"):
                assert client.get(path).status_code == 200, path
            token = csrf_of(client.get("/dlq").text)
            refused = client.post("/dlq/requeue", data={"job_id": str(dead), "csrf_token": token})
            assert refused.status_code == 400 and "permission denied" in refused.text
            refused = client.post("/queues/pause", data={"queue": "emails", "csrf_token": token})
            assert refused.status_code == 400
    finally:
        served.stop()
    assert factories.snapshot(world.admin) == before


def test_read_only_by_default_and_bad_input_is_refused(world: World, site: str) -> None:
    served = serve(Settings(database_url=world.db_url), Access())
    before = factories.snapshot(world.admin)
    try:
        with httpx.Client(base_url=served.url) as client:
            page = client.get("/dlq")
            assert "read-only" in page.text and "disabled" in page.text
            token = csrf_of(page.text)
            refused = client.post("/dlq/purge", data={"job_id": str(world.seeded.dead[2]), "csrf_token": token})
            assert refused.status_code == 403 and "read-only" in refused.text
    finally:
        served.stop()
    with httpx.Client(base_url=site, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        token = csrf_of(client.get("/dlq").text)
        for path, data in [("/dlq/requeue", {"job_id": "1; DROP TABLE pgq.jobs"}), ("/dlq/requeue", {}),
                           ("/dlq/requeue", {"job_id": str(world.seeded.parent)}),  # not dead
                           ("/workers/not-a-uuid/drain", {}), (f"/workers/{world.seeded.worker}/evacuate", {}),
                           ("/queues/pause", {"queue": "bad queue!"}), ("/dlq/delete-everything", {})]:
            answer = client.post(path, data={**data, "csrf_token": token})
            assert answer.status_code in (400, 404), (path, data, answer.status_code)
        for path in ("/jobs?status=lost", "/jobs?created_from=yesterday", "/jobs?before=-1", "/dlq?queue=bad%20queue"):
            assert client.get(path).status_code == 400, path
        assert client.get("/jobs/999999999").status_code == 404
        # A form posted from another site is refused even with the right token and cookie.
        forged = client.post("/dlq/purge", data={"job_id": str(world.seeded.dead[2]), "csrf_token": token},
                             headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
    assert factories.snapshot(world.admin) == before
    # A login that may not read the tables: the page says so (503), with no traceback.
    served = serve(Settings(database_url=world.login()), Access())
    try:
        page = httpx.get(f"{served.url}/workers")
        assert page.status_code == 503 and "permission denied" in page.text and "Traceback" not in page.text
    finally:
        served.stop()


def test_basic_auth_acts_with_the_login_and_refuses_a_wrong_password(world: World) -> None:
    dsn = world.login("pgq_viewer", "pgq_operator")
    served = serve(Settings(database_url=dsn), Access(username="ops", password="correct horse"))
    try:
        with httpx.Client(base_url=served.url) as client:
            token = csrf_of(client.get("/schedules").text)
            form = {"queue": "emails", "csrf_token": token}
            asked = client.post("/queues/pause", data=form)
            assert asked.status_code == 401 and asked.headers["www-authenticate"].startswith("Basic ")
            assert client.post("/queues/pause", data=form, auth=("ops", "wrong horse")).status_code == 401
            assert world.admin.execute("SELECT count(*) FROM pgq.paused_queues WHERE queue = 'emails'").fetchone() == (0,)
            done = client.post("/queues/pause", data=form, auth=("ops", "correct horse"))
            assert done.status_code == 303 and "paused" in done.headers["location"]
    finally:
        served.stop()
    paused = world.admin.execute("SELECT paused_by FROM pgq.paused_queues WHERE queue = 'emails'").fetchone()
    assert paused is not None and paused[0].startswith("pgqt_dash_")  # the dashboard's own login did it
    world.admin.execute("SELECT pgq.resume_queue('emails')")


def test_every_page_reads_the_configured_schema(db_url: str) -> None:
    schema = f"pgqdash_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=db_url, schema=schema)
    migrate.upgrade(settings)
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            job = factories.insert_job(conn, status="dead", last_error="boom", schema=schema)
            factories.insert_dead_letter(conn, job, schema=schema)
            factories.insert_worker(conn, schema=schema)
        served = serve(settings, Access())
        try:
            with httpx.Client(base_url=served.url) as client:
                for path in ("/", "/jobs", f"/jobs/{job}", "/workers", "/dlq", "/schedules"):
                    page = client.get(path)
                    assert page.status_code == 200, (path, page.text)
                assert f'href="/jobs/{job}"' in client.get("/dlq").text
        finally:
            served.stop()
    finally:
        migrate.downgrade(settings, "base")
        migrate.drop_roles(settings)


def test_the_command_serves_the_dashboard_on_localhost(world: World) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PGQ_DASHBOARD_TOKEN": TOKEN, "PGQ_DATABASE_URL": world.db_url}
    process = subprocess.Popen([sys.executable, "-m", "pgq", "dashboard", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def answers() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/jobs?queue=emails")
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                return None

        page = factories.eventually(answers, "pgq dashboard to answer", timeout=60)
        assert page.status_code == 200 and "send_email" in page.text and "sign in to act" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert f"pgq dashboard on http://127.0.0.1:{port}/ (actions need the token)" in out


@pytest.mark.search
def test_a_failed_jobs_page_shows_similar_failures_from_the_memory(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, memory=True, memory_path=str(tmp_path / "memory"),
                        memory_flush_interval_seconds=3600)
    with pgq.connect(settings=settings) as q:
        @q.task(name="send_email", max_attempts=2)
        def send_email(mx: int, flaky: bool) -> None:
            if flaky and pgq.current_job().job.attempts > 1:
                return
            raise TimeoutError(f"SMTP timeout after {mx}s talking to mx{mx}.mail.example.com")

        retried = q.enqueue("send_email", {"mx": 3, "flaky": True})
        dead = q.enqueue("send_email", {"mx": 17, "flaky": False})
        worker = q.worker(queues=["default"], install_signal_handlers=False, run_maintenance=False)
        with psycopg.connect(db_url, autocommit=True) as conn:
            while True:  # until nothing is due, retries made due at once
                conn.execute("UPDATE pgq.jobs SET run_at = now() WHERE status = 'retrying'")
                if worker.run_once() == 0:
                    break
        assert worker.memory is not None
        worker.memory.close(timeout=120)  # its thread writes what is left, then frees the local store
    served = serve(settings, Access())
    try:
        page = httpx.get(f"{served.url}/jobs/{dead}").text
        similar = page.split('id="similar"')[1].split("</table>")[0]
        assert f'href="/jobs/{retried}"' in similar and "retry succeeded" in similar and "TimeoutError" in similar
    finally:
        served.stop()
