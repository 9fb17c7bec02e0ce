"""Who may use the console: a role's bearer token given once, kept as a server-side session.

The browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie; the role
and its token stay in this process. Reads need any role; actions need the administrator's,
and they are forwarded to the services with the administrator's own token, so the services
check it again. Every form carries the session's CSRF token in a hidden field, checked on
POST. A one-time login link (as Jupyter's) logs in as the administrator; each use issues the
next one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials

from services.common.auth import Role, role_of
from services.common.errors import DwsimError
from services.common.settings import Settings

COOKIE = "dwsim_console"
CSRF_FIELD = "csrf"


class NeedsLogin(DwsimError):
    """No session, or an unknown one: the page sends the browser to the login form."""


class Forbidden(DwsimError):
    """The session's role may not do this, or a form came without its CSRF token (403)."""


@dataclass
class Notice:
    """A message shown once on the next page: an action's result or its refusal."""

    text: str
    level: str = "info"  # info | error


@dataclass
class Session:
    """One logged-in browser."""

    role: Role
    token: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    notices: list[Notice] = field(default_factory=list)

    @property
    def may_act(self) -> bool:
        """Actions (run, pause, retry, edit a rule) are the administrator's."""
        return self.role is Role.ADMINISTRATOR

    def tell(self, text: str, level: str = "info") -> None:
        """Show `text` on the next page."""
        self.notices.append(Notice(text, level))

    def take_notices(self) -> list[Notice]:
        """The notices to show now; each is shown once."""
        notices, self.notices = self.notices, []
        return notices


class OneTimeLogin:
    """The current one-time login link; `record` publishes each new one (the state file)."""

    def __init__(self, url: str, record: Callable[[str], None]) -> None:
        self._url = url
        self._record = record
        self._nonce = ""
        self.issue()

    def issue(self) -> str:
        """Make a new link (the old one stops working) and record it."""
        self._nonce = secrets.token_urlsafe(32)
        link = f"{self._url}/login/once/{self._nonce}"
        self._record(link)
        return link

    def redeem(self, nonce: str) -> bool:
        """True once for the current link's nonce; a new link is issued on success."""
        if not secrets.compare_digest(nonce.encode(), self._nonce.encode()):
            return False
        self.issue()
        return True


class Access:
    """The console's sessions, in memory: a restarted console asks everyone to log in again."""

    def __init__(self, settings: Settings, one_time: OneTimeLogin) -> None:
        self.settings = settings
        self.one_time = one_time
        self._sessions: dict[str, Session] = {}

    def login(self, token: str) -> str | None:
        """A new session id for a role's token, or None for an unknown token."""
        role = role_of(
            self.settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
        )
        if role is None:
            return None
        return self._open(Session(role, token))

    def login_once(self, nonce: str) -> str | None:
        """A new administrator's session for the one-time link's nonce, or None."""
        if not self.one_time.redeem(nonce):
            return None
        return self._open(Session(Role.ADMINISTRATOR, self.settings.token_administrator))

    def _open(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = session
        return session_id

    def logout(self, session_id: str | None) -> None:
        """Forget the session."""
        if session_id:
            self._sessions.pop(session_id, None)

    def session_of(self, request: Request) -> Session | None:
        """The request's session, if its cookie names one."""
        session_id = request.cookies.get(COOKIE)
        return self._sessions.get(session_id) if session_id else None


def access_of(request: Request) -> Access:
    """The app's Access."""
    access: Access = request.app.state.access
    return access


async def viewer(request: Request) -> Session:
    """FastAPI dependency of every page: a logged-in session of any role."""
    session = access_of(request).session_of(request)
    if session is None:
        raise NeedsLogin(request.url.path)
    return session


async def read_form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the last value of each)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


async def action_form(request: Request) -> tuple[Session, dict[str, str]]:
    """An administrator's form, its CSRF token checked: (session, fields)."""
    session = await viewer(request)
    fields = await read_form(request)
    given = fields.get(CSRF_FIELD, "")
    if not secrets.compare_digest(given.encode(), session.csrf.encode()):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
    if not session.may_act:
        raise Forbidden(
            f"role {session.role.value} may look but not act; log in with the administrator's "
            "token to run, pause, resume, stop, retry or edit"
        )
    return session, fields
