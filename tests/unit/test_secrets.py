"""Passwords never show: not in repr, exception messages and their chains, logs, or CLI output.

No database is needed: every URL here points at 127.0.0.1:1, where nothing
listens, or cannot be parsed at all. Each password is distinctive (it starts
with ``Pw7`` and contains nothing a redacted text would), so "not in the
text" is a meaningful check; the property test draws passwords with the
characters that break naive redaction (``@ / : ? # % ' \\`` and spaces).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import pgq
from pgq.cli import main
from pgq.migrate import current_revision, upgrade
from pgq.notify import Listener
from pgq.settings import Settings, redact_url

SECRET = "Pw7-Sup3rS3cret"

# Wrong DSNs in every form a user writes, each carrying SECRET.
WRONG_DSNS = [
    f"postgresql://app:{SECRET}@127.0.0.1:1/app",                       # refused
    f"postgres://app:{SECRET}@127.0.0.1:1/app?sslmode=disable",
    f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/app",              # SQLAlchemy spelling
    f"host=127.0.0.1 port=1 user=app password={SECRET} dbname=app",
    f"host=127.0.0.1 port=1 user=app password='{SECRET} x' dbname=app",
    f"postgresql://app@127.0.0.1:1/app?password={SECRET}",
    f"postgresql://app:{SECRET}@127.0.0.1:notaport/app",               # unparsable port
    f"host=127.0.0.1 password={SECRET} no_such_option=1",               # unknown option
    # Found while writing these tests: libpq quotes an unparsable URI whole in its
    # error, and reads the tail of a password typed with a raw "@" as the host.
    f"postgresql://app:{SECRET}@[::1/app",
    f"postgresql://app:p@{SECRET}@127.0.0.1:1/app",
    f"postgresql://app:{SECRET}/x?y@127.0.0.1:1/app",
]


def everything_about(exc: BaseException) -> str:
    """str, repr and formatted traceback of ``exc`` and of every exception chained to it."""
    parts = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        todo += [current.__cause__, current.__context__]
    return "\n".join(parts)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert SECRET not in text
    assert "p@Pw7" not in text


@pytest.mark.parametrize("url", WRONG_DSNS)
def test_a_wrong_dsn_is_a_configuration_error_that_never_shows_the_password(
    url: str, all_logs: pytest.LogCaptureFixture,
) -> None:
    q = pgq.connect(url, strict_tasks=False)
    with pytest.raises(pgq.ConfigurationError) as info:
        q.enqueue("t", {})
    assert SECRET not in everything_about(info.value)
    assert "***" in str(info.value)
    for shown in (repr(q), str(q.settings), repr(q.settings), repr(q.worker(queues=["default"]))):
        assert SECRET not in shown


@pytest.mark.parametrize("url", WRONG_DSNS[:2] + WRONG_DSNS[-3:])
def test_migrations_with_a_wrong_dsn_never_show_the_password(url: str, all_logs: pytest.LogCaptureFixture) -> None:
    for action in (lambda: upgrade(Settings(database_url=url)), lambda: current_revision(Settings(database_url=url))):
        with pytest.raises(pgq.ConfigurationError) as info:
            action()
        assert SECRET not in everything_about(info.value)


@pytest.mark.parametrize("url", WRONG_DSNS[:1] + WRONG_DSNS[-3:])
@pytest.mark.parametrize("args", [["status"], ["workers"], ["dlq", "list"], ["dlq", "requeue", "--all"],
                                  ["migrate"], ["migrate", "--check"], ["migrate", "--sql"]])
def test_cli_output_never_shows_the_password(url: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
                                             all_logs: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("PGQ_SCHEMA", raising=False)
    monkeypatch.setenv("PGQ_DATABASE_URL", url)  # from the environment ...
    from_env = CliRunner().invoke(main, ["-vv", *args])
    monkeypatch.delenv("PGQ_DATABASE_URL")
    from_option = CliRunner().invoke(main, ["-vv", "--database-url", url, *args])  # ... and as an option
    for result in (from_env, from_option):
        assert SECRET not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit) or SECRET not in everything_about(
            result.exception)
        assert result.exit_code in (0, 2), result.output  # 0 only for migrate --sql, which needs no database


def test_the_listener_logs_its_connection_failures_without_the_password(all_logs: pytest.LogCaptureFixture) -> None:
    import threading

    failed = threading.Event()
    listener = Listener(WRONG_DSNS[-2], ["pgq_job_available"], lambda c, p: None, failed.set,
                        max_backoff_seconds=0.05)
    listener.start()
    try:
        assert failed.wait(10), "the listener never reported its failed connection"
    finally:
        listener.stop()
    assert any("LISTEN connection lost" in r.getMessage() for r in all_logs.records)


# ---------------------------------------------------------------- any password


passwords = st.text(alphabet=st.sampled_from("abcXYZ0189@/:?#%&=' \\\"$-_.+!~*()[]{}é"), min_size=0, max_size=16).map(
    lambda tail: "Pw7" + tail)


@settings(max_examples=300, deadline=None, database=None)
@given(password=passwords, user=st.sampled_from(["app", "", "a.b-c"]))
def test_redaction_hides_any_password_in_every_spelling(password: str, user: str) -> None:
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    spellings = [
        f"postgresql://{user}:{quote(password, safe='')}@db.example:5432/app",       # percent-encoded, as it should be
        f"postgresql://{user}:{password}@db.example:5432/app",                        # typed raw
        f"postgresql+psycopg://{user}:{quote(password, safe='')}@db.example/app?sslmode=require",
        f"postgresql://{user}@db.example/app?sslmode=require&password={quote(password, safe='')}",
        f"host=db.example user=app password='{escaped}' dbname=app",
        f"host=db.example password = '{escaped}'",
    ]
    for url in spellings:
        redacted = redact_url(url)
        assert redacted is not None and password not in redacted, url
        as_redis = "rediss+sentinel://" + url.split("://", 1)[1] if "://" in url else None  # the same secret
        try:
            s = Settings(database_url=url, redis_url=as_redis, listen_database_url=url)
            assert password not in repr(s) and password not in str(s)
        except pgq.ConfigurationError as exc:  # malformed as a Sentinel URL (no port): the error hides it too
            assert password not in str(exc)
        s = Settings(database_url=url, listen_database_url=url)
        assert password not in repr(s) and password not in str(s)
