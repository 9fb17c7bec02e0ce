"""Approving entries in a batch: every entry's actuals, or — when one is refused — none."""

from __future__ import annotations

import pytest

from tests.integration.dataverse.project_setup import contracted_project, ok
from tests.integration.dataverse.service_under_test import DataverseUnderTest

pytestmark = pytest.mark.integration


def _entry(project_id: str, line_id: str, hours: str = "8") -> dict[str, str]:
    return {
        "transaction_class": "time",
        "project_id": project_id,
        "contract_line_id": line_id,
        "quantity": hours,
        "document_date": "2026-10-01",
        "role": "Developer",
    }


async def test_batch_approves_every_entry_with_cost_and_unbilled_actuals(
    dataverse: DataverseUnderTest,
) -> None:
    project = await contracted_project(dataverse.client)
    body = {"entries": [_entry(project.project_id, project.tm_line_id) for _ in range(3)]}
    approved = ok(await dataverse.client.post("/entries/approve-batch", json=body), 201)
    assert len(approved["entries"]) == 3
    for entry in approved["entries"]:
        kinds = sorted((a["transaction_type"], a["amount"]) for a in entry["actuals"])
        assert kinds == [("cost", "800.00"), ("unbilled_sales", "1600.00")]


async def test_batch_with_one_bad_entry_writes_nothing(dataverse: DataverseUnderTest) -> None:
    project = await contracted_project(dataverse.client)
    good = _entry(project.project_id, project.tm_line_id)
    unknown_line = _entry(project.project_id, "00000000-0000-0000-0000-000000000000")
    response = await dataverse.client.post(
        "/entries/approve-batch", json={"entries": [good, unknown_line]}
    )
    assert response.status_code == 404, response.text
    assert await dataverse.table("SELECT actual_id FROM msdyn_actual") == []
    assert await dataverse.table("SELECT event_id FROM dwsim_outbox") == []
