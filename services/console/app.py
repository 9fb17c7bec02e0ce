"""The console's FastAPI app: its pages, static files, and every error as a page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.logging import get_logger
from services.common.settings import Settings
from services.console import invoice_page, login_page, maps_page, overview_page, reconciliation_page
from services.console.access import Access, Forbidden, NeedsLogin, access_of
from services.console.apis import ApiError, refusal
from services.console.pages import error_page
from services.simulator.processes import ServiceStartFailed

log = get_logger(__name__)


def build_app(settings: Settings, access: Access) -> FastAPI:
    """The console: pages behind a login, /health for the launcher, /static for CSS and JS."""
    app = FastAPI(title="dwsim console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.access = access
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse({"service": "console", "status": "ok"})

    for module in (login_page, overview_page, maps_page, invoice_page, reconciliation_page):
        app.include_router(module.router())
    _error_pages(app)
    return app


def _error_pages(app: FastAPI) -> None:
    def session(request: Request):  # type: ignore[no-untyped-def]
        return access_of(request).session_of(request)

    async def needs_login(request: Request, _: Exception) -> Response:
        target = request.url.path
        if request.url.query:
            target += f"?{request.url.query}"
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return error_page(request, session(request), 403, "Not allowed", str(exc))

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 404:
            return error_page(request, session(request), 404, "Not found", str(exc.detail))
        return error_page(request, session(request), 502, "A service refused", refusal(exc))

    async def service_down(request: Request, exc: Exception) -> Response:
        return error_page(request, session(request), 503, "A service is not running", str(exc))

    async def unreachable(request: Request, exc: Exception) -> Response:
        return error_page(
            request,
            session(request),
            503,
            "A service did not answer",
            f"{type(exc).__name__}: {exc}; `dwsim status` shows what runs",
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_page(
                request, session(request), 404, "Not found", f"nothing at {request.url.path}"
            )
        return error_page(request, session(request), exc.status_code, "Refused", str(exc.detail))

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # A malformed id in the path names nothing that exists.
        if any(error.get("loc", ("",))[0] == "path" for error in exc.errors()):
            return error_page(
                request, session(request), 404, "Not found", f"nothing at {request.url.path}"
            )
        what = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_page(request, session(request), 400, "Bad request", what)

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("page_failed", path=request.url.path, error=repr(exc))
        return error_page(
            request,
            session(request),
            500,
            "Something went wrong",
            "the console could not show this page; its log (`dwsim logs console`) says why",
        )

    app.add_exception_handler(NeedsLogin, needs_login)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ServiceStartFailed, service_down)
    app.add_exception_handler(httpx.HTTPError, unreachable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crashed)
