"""Rendering a page: the templates, the logged-in session's notices, and the error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.console.access import Session

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _money(value: Any) -> str:
    """An amount with thousands separators and two decimals, as the admin pages show it."""
    if value is None or value == "":
        return "—"
    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        return str(value)


def _when(value: Any) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if not value:
        return "—"
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: Any) -> str:
    """A duration in seconds as '2 h 05 min', '3 min 07 s' or '12 s'."""
    if seconds is None:
        return "—"
    s = int(float(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _size(count: Any) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    n = float(count or 0)
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


TEMPLATES.env.filters.update(money=_money, when=_when, age=_age, size=_size)


def render(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """The page `template` with the session's notices (shown once) and its CSRF token."""
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "notices": session.take_notices() if session else [],
            "csrf": session.csrf if session else "",
            **context,
        },
        status_code=status_code,
    )


def error_page(
    request: Request, session: Session | None, status_code: int, title: str, message: str
) -> HTMLResponse:
    """A page that says what went wrong, never a stack trace."""
    return render(
        request, "error.html", session, status_code, title=title, message=message, code=status_code
    )
