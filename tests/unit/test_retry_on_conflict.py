"""A request whose transaction lost a deadlock runs again, with its body, before answering."""

from __future__ import annotations

import asyncpg
import httpx
from pydantic import BaseModel

from services.common.api import create_app


class Body(BaseModel):
    n: int


def _app(failures: int) -> tuple[object, list[int]]:
    app = create_app("t", "t")
    seen: list[int] = []

    @app.post("/work")
    async def work(body: Body) -> dict[str, int]:
        seen.append(body.n)
        if len(seen) <= failures:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return {"n": body.n, "attempts": len(seen)}

    return app, seen


async def test_deadlocked_request_is_run_again_with_its_body() -> None:
    app, seen = _app(failures=2)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/work", json={"n": 7})
    assert response.status_code == 200
    assert response.json() == {"n": 7, "attempts": 3}
    assert seen == [7, 7, 7]


async def test_a_conflict_that_persists_is_an_error_after_five_attempts() -> None:
    app, seen = _app(failures=99)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/work", json={"n": 1})
    assert response.status_code == 500
    assert len(seen) == 5
