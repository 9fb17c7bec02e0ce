"""HTTP clients of the three services' APIs, as the simulator and the scenarios use them."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.settings import Settings
from services.simulator.processes import service_url

Json = Any


class ApiError(RuntimeError):
    """A service answered with an error status; the message carries its detail."""

    def __init__(self, service: str, method: str, path: str, status: int, detail: Json) -> None:
        super().__init__(f"{service}: {method} {path} → {status}: {detail}")
        self.status = status
        self.detail = detail


class ApiClient:
    """A service's API with one role's bearer token."""

    def __init__(self, service: str, base_url: str, token: str, timeout: float = 60) -> None:
        self.service = service
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Json = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> Json:
        """Send a request; return the JSON answer or raise ApiError."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(
            method, path, json=body, params=clean or None, headers=headers
        )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(self.service, method, path, response.status_code, detail)
        if not response.content:
            return None
        return response.json()

    async def get(self, path: str, **params: Any) -> Json:
        """GET with query parameters (None values left out)."""
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Json = None, token: str | None = None) -> Json:
        """POST a JSON body."""
        return await self.call("POST", path, body if body is not None else {}, token=token)


class Services:
    """Clients of all three services, with the tokens of the roles that use them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dataverse = ApiClient(
            "dataverse", service_url(settings, "dataverse"), settings.token_project_manager
        )
        self.finance = ApiClient(
            "finance", service_url(settings, "finance"), settings.token_accountant
        )
        self.bridge = ApiClient(
            "bridge", service_url(settings, "bridge"), settings.token_administrator
        )

    @property
    def clerk_token(self) -> str:
        """The receivables clerk posts proposals."""
        return self.settings.token_receivables_clerk

    async def close(self) -> None:
        """Close every client."""
        for client in (self.dataverse, self.finance, self.bridge):
            await client.close()
