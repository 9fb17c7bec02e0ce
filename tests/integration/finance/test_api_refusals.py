"""NUL in Finance's query and path parameters: 422 naming the parameter, not a 500 (issue 18)."""

from __future__ import annotations

import pytest

from tests.integration.finance.conftest import Finance

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/journals?legal_entity=%00", ["query", "legal_entity"]),
        ("/ledger?voucher=a%00", ["query", "voucher"]),
        ("/staging?legal_entity=a%00", ["query", "legal_entity"]),
        ("/legal-entities/US%00PM", ["path", "legal_entity_id"]),
    ],
)
async def test_nul_in_a_parameter_is_422_naming_it(
    finance: Finance, path: str, loc: list[str]
) -> None:
    response = await finance.call("GET", path)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
