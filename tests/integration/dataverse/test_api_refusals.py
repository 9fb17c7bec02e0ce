"""Shared API refusals, on the Dataverse service: NUL in text, roles, what /health tells whom."""

from __future__ import annotations

from uuid import uuid4

import pytest

from tests.integration.dataverse.service_under_test import DataverseUnderTest, bearer

pytestmark = pytest.mark.integration


async def test_nul_in_a_body_text_field_is_422_naming_the_field(
    dataverse: DataverseUnderTest,
) -> None:
    response = await dataverse.client.post(
        "/accounts", json={"name": "a\u0000b", "legal_entity": "USPM"}
    )
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "name"]]
    assert await dataverse.table("SELECT * FROM account") == []


async def test_project_manager_may_not_retry_parked_events(
    dataverse: DataverseUnderTest,
) -> None:
    event = uuid4()
    as_pm = await dataverse.client.post(f"/parked-events/{event}/retry")
    assert as_pm.status_code == 403, as_pm.text
    for role in ("accountant", "receivables_clerk"):
        token = getattr(dataverse.settings, f"token_{role}")
        response = await dataverse.client.post(
            f"/parked-events/{event}/retry", headers=bearer(token)
        )
        assert response.status_code == 403, (role, response.text)
    as_admin = await dataverse.client.post(
        f"/parked-events/{event}/retry",
        headers=bearer(dataverse.settings.token_administrator),
    )
    assert as_admin.status_code != 403, as_admin.text


async def test_health_without_a_token_says_up_and_nothing_more(
    dataverse: DataverseUnderTest,
) -> None:
    anonymous = await dataverse.client.get("/health", headers={"Authorization": ""})
    assert anonymous.status_code == 200
    assert anonymous.json() == {"service": "dataverse", "status": "ok"}
    unknown = await dataverse.client.get("/health", headers=bearer("not-a-token"))
    assert unknown.json() == {"service": "dataverse", "status": "ok"}
    with_token = (await dataverse.client.get("/health")).json()
    assert with_token["database"] == dataverse.settings.service_database("dataverse")
    assert "outbox" in with_token and "parked_events" in with_token
