"""No guessable credentials: the constant tokens every home once shared are refused."""

from __future__ import annotations

import pytest

from tests.integration.dataverse.service_under_test import DataverseUnderTest, bearer

pytestmark = pytest.mark.integration


async def test_the_old_constant_tokens_are_refused_and_the_homes_own_are_taken(
    dataverse: DataverseUnderTest,
) -> None:
    client = dataverse.client
    account = {"name": "Adventure Works", "legal_entity": "USPM"}
    for guessable in ("local-project-manager", "local-administrator"):
        response = await client.post("/accounts", json=account, headers=bearer(guessable))
        assert response.status_code == 401, (guessable, response.text)
    accepted = await client.post(
        "/accounts", json=account, headers=bearer(dataverse.settings.token_project_manager)
    )
    assert accepted.status_code == 201, accepted.text
