"""Who may act on the dashboard: the operator's token or basic-auth login, and CSRF tokens.

Reading needs nothing (the dashboard binds to 127.0.0.1 by default); every
action (a POST) needs, in this order: actions switched on (a token or a
user and password configured), the caller's credentials, and a CSRF token
bound to the browser's ``pgq_csrf`` cookie. A browser signs in with the
token once (``/login`` sets an HMAC of it as a cookie) or with basic auth;
scripts may send ``Authorization: Bearer <token>``. Secrets are compared in
constant time, and cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from pgq.errors import ConfigurationError

#: Cookie names.
CSRF_COOKIE = "pgq_csrf"
SESSION_COOKIE = "pgq_session"
#: The form field that carries the CSRF token.
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Access:
    """The operator's credentials for actions (none: the dashboard is read-only).

    ``secret`` keys the CSRF and session HMACs; a new one per process by default
    (a restart signs everyone out).
    """

    token: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ConfigurationError("PGQ_DASHBOARD_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        if (self.username is None) != (self.password is None):
            raise ConfigurationError("set both PGQ_DASHBOARD_USER and PGQ_DASHBOARD_PASSWORD, or neither")
        if self.username is not None and (not self.username or ":" in self.username):
            raise ConfigurationError("PGQ_DASHBOARD_USER must be non-empty and contain no ':'")
        if self.password is not None and len(self.password) < 8:
            raise ConfigurationError("PGQ_DASHBOARD_PASSWORD must be at least 8 characters")

    @property
    def actions_enabled(self) -> bool:
        return self.token is not None or self.username is not None

    @property
    def uses_basic_auth(self) -> bool:
        return self.username is not None

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------ sign-in
    def session_value(self) -> str:
        """The session cookie's value after a sign-in with the token."""
        assert self.token is not None
        return self._sign("session", self.token)

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def authorised(self, authorization: str | None, session: str | None) -> bool:
        """Whether a request with this ``Authorization`` header and session cookie may act."""
        if self.token is not None:
            if session and hmac.compare_digest(session.encode(), self.session_value().encode()):
                return True
            if authorization and authorization.startswith("Bearer ") and self.token_matches(authorization[7:]):
                return True
        if self.username is not None and self.password is not None and authorization \
                and authorization.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared, always: the time taken does not tell which one was wrong.
            user_ok = hmac.compare_digest(user.encode(), self.username.encode())
            password_ok = hmac.compare_digest(password.encode(), self.password.encode())
            return user_ok and password_ok
        return False

    # ------------------------------------------------------------ CSRF
    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_hex(16)

    def csrf_token(self, cookie: str) -> str:
        """The form token for the browser holding ``cookie``."""
        return self._sign("csrf", cookie)

    def csrf_valid(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(cookie).encode())
