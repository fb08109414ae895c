"""The dashboard's checks without a server: credentials, CSRF tokens, escaping in the charts, CLI options."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from pgq.cli import main
from pgq.dashboard import charts
from pgq.dashboard.security import Access
from pgq.errors import ConfigurationError

TOKEN = "0123456789abcdef-token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("options", [
    {"token": "short"}, {"username": "ops"}, {"password": "long enough"}, {"username": "a:b", "password": "12345678"},
    {"username": "ops", "password": "short"},
])
def test_weak_or_half_configured_credentials_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Access(**options)


def test_read_only_unless_a_token_or_a_login_is_set() -> None:
    assert not Access().actions_enabled
    assert not Access().authorised(f"Bearer {TOKEN}", None)
    assert Access(token=TOKEN).actions_enabled and Access(username="ops", password="12345678").actions_enabled


def test_the_token_signs_in_by_header_or_session_cookie_and_nothing_else_does() -> None:
    access = Access(token=TOKEN)
    assert access.authorised(f"Bearer {TOKEN}", None)
    assert access.authorised(None, access.session_value())
    assert not access.authorised(f"Bearer {TOKEN}x", None)
    assert not access.authorised(None, Access(token=TOKEN).session_value())  # another process's secret
    assert not access.authorised(basic("ops", TOKEN), None)
    assert not access.authorised(None, None)


def test_basic_auth_needs_both_the_user_and_the_password() -> None:
    access = Access(username="ops", password="correct horse")
    assert access.authorised(basic("ops", "correct horse"), None)
    for header in (basic("ops", "wrong horse"), basic("dev", "correct horse"), "Basic !!!not-base64",
                   "Basic " + base64.b64encode(b"\xff\xfe").decode(), "Bearer correct horse"):
        assert not access.authorised(header, None), header


def test_a_csrf_token_is_bound_to_its_cookie_and_to_the_process_secret() -> None:
    access = Access(token=TOKEN)
    cookie = access.new_csrf_cookie()
    token = access.csrf_token(cookie)
    assert access.csrf_valid(cookie, token)
    assert not access.csrf_valid(cookie, None) and not access.csrf_valid(None, token)
    assert not access.csrf_valid(access.new_csrf_cookie(), token)
    assert not access.csrf_valid(cookie, "f" * 64)
    assert not Access(token=TOKEN).csrf_valid(cookie, token)


def test_the_charts_escape_names_and_say_when_there_is_nothing_to_draw() -> None:
    drawn = str(charts.line_chart({"<script>x</script>": [(30.0, 2.0), (10.0, 4.0)]}, title="a & b"))
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn and "a &amp; b" in drawn
    assert drawn.count("<polyline") == 1
    assert "no data" in str(charts.line_chart({}, title="t"))
    bars = str(charts.stacked_bars({"q\"1": {"queued": 3, "dead": 1}}, title="depth"))
    assert bars.count('class="bar"') == 2 and 'q&#34;1' in bars


def test_the_command_refuses_a_weak_token_before_it_serves() -> None:
    result = CliRunner().invoke(main, ["--database-url", "postgresql://x@127.0.0.1:1/none", "dashboard"],
                                env={"PGQ_DASHBOARD_TOKEN": "short"})
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    assert "PGQ_DASHBOARD_TOKEN" in CliRunner().invoke(main, ["dashboard", "--help"]).output
