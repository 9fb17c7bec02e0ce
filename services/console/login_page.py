"""Logging in with a role's token, or with the one-time link `dwsim up` printed; logging out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.console.access import COOKIE, CSRF_FIELD, access_of, read_form
from services.console.pages import render


def _safe_next(target: str | None) -> str:
    # Only a path of this console: a login must not bounce the browser to another site.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _logged_in(session_id: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/")
    return response


def router() -> APIRouter:
    """Login and logout routes."""
    routes = APIRouter()

    @routes.get("/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        return render(request, "login.html", None, next=_safe_next(next), failed=False)

    @routes.post("/login")
    async def login(request: Request) -> Response:
        fields = await read_form(request)
        target = _safe_next(fields.get("next"))
        session_id = access_of(request).login(fields.get("token", "").strip())
        if session_id is None:
            return render(request, "login.html", None, 401, next=target, failed=True)
        return _logged_in(session_id, target)

    @routes.get("/login/once/{nonce}")
    async def login_once(request: Request, nonce: str) -> Response:
        session_id = access_of(request).login_once(nonce)
        if session_id is None:
            return render(request, "login.html", None, 401, next="/", failed=True, used_link=True)
        return _logged_in(session_id, "/")

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        access = access_of(request)
        session = access.session_of(request)
        fields = await read_form(request)
        if session is not None and fields.get(CSRF_FIELD) == session.csrf:
            access.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return routes
