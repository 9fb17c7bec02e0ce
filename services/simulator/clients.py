"""HTTP clients of the three services' APIs, as the simulator and the scenarios use them."""

from __future__ import annotations

from typing import Any

import httpx

from infra.processes import pid_alive
from services.common.settings import Settings
from services.simulator.processes import ServiceStartFailed, serving_instance

Json = Any


class ApiError(RuntimeError):
    """A service answered with an error status; the message carries its detail."""

    def __init__(self, service: str, method: str, path: str, status: int, detail: Json) -> None:
        super().__init__(f"{service}: {method} {path} → {status}: {detail}")
        self.service = service
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
        wait_s: float | None = None,
    ) -> Json:
        """Send a request; return the JSON answer or raise ApiError. `wait_s` replaces the
        client's time-out for this request only."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(
            method,
            path,
            json=body,
            params=clean or None,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if wait_s is None else wait_s,
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

    async def post(
        self, path: str, body: Json = None, token: str | None = None, wait_s: float | None = None
    ) -> Json:
        """POST a JSON body."""
        body = body if body is not None else {}
        return await self.call("POST", path, body, token=token, wait_s=wait_s)

    async def put(self, path: str, body: Json, token: str | None = None) -> Json:
        """PUT a JSON body."""
        return await self.call("PUT", path, body, token=token)


class Services:
    """Clients of all three services, with the tokens of the roles that use them.

    Each client is made on first use, so that a command needing only the bridge says that the
    bridge is not running, not that Dataverse is not.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, ApiClient] = {}
        # The process each client talks to: with several instances of a service, a client
        # whose instance is gone is replaced by one of the first live instance.
        self._pids: dict[str, int | None] = {}
        self._retired: list[ApiClient] = []

    def _client(self, name: str, role: str) -> ApiClient:
        current = self._clients.get(name)
        pid = self._pids.get(name)
        if current is not None and (pid is None or pid_alive(pid)):
            return current
        try:
            instance = serving_instance(self.settings, name)
        except ServiceStartFailed:
            if current is not None:
                # No live instance to switch to (a service being restarted): the old client
                # stays, and a call fails as a connection error, which callers retry.
                return current
            raise  # a service that is not running is the error to name
        if current is not None:
            self._retired.append(current)
        assert instance.url is not None  # a running instance has recorded its address
        self._clients[name] = ApiClient(name, instance.url, self.settings.role_token(role))
        self._pids[name] = instance.pid
        return self._clients[name]

    @property
    def dataverse(self) -> ApiClient:
        """Dataverse, as the project manager."""
        return self._client("dataverse", "project_manager")

    @property
    def finance(self) -> ApiClient:
        """Finance, as the project accountant."""
        return self._client("finance", "accountant")

    @property
    def bridge(self) -> ApiClient:
        """The bridge's admin API, as the administrator."""
        return self._client("bridge", "administrator")

    @property
    def clerk_token(self) -> str:
        """The receivables clerk posts proposals."""
        return self.settings.token_receivables_clerk

    async def close(self) -> None:
        """Close every client made."""
        for client in (*self._clients.values(), *self._retired):
            await client.close()
