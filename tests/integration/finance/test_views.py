"""Finance's response models against its tables, and the header edit through the API.

A response model lists its table's columns one by one; a column added by a migration without
its field would vanish from the API silently, so the two are compared here."""

from __future__ import annotations

from uuid import uuid4

import pytest
from pydantic import BaseModel

from services.finance import views
from tests.integration.finance.conftest import Finance, header_record

pytestmark = pytest.mark.integration

# table -> (its response model, the model's fields that are not columns of the table)
MODELS: dict[str, tuple[type[BaseModel], set[str]]] = {
    "actuals_staging": (views.StagingRowOut, {"invalid_reason"}),
    "refused_record": (views.RefusedRecordOut, set()),
    "integration_journal": (views.JournalOut, {"line_count"}),
    "integration_journal_line": (views.JournalLineOut, set()),
    "project_invoice_proposal": (views.ProposalOut, {"total_amount", "tax_amount"}),
    "proposal_line": (views.ProposalLineOut, set()),
    "customer_invoice": (views.CustomerInvoiceOut, set()),
    "voucher": (views.VoucherOut, {"entries", "balance"}),
    "ledger_entry": (views.VoucherEntryOut, set()),
}


async def test_every_response_model_shows_every_column_of_its_table(finance: Finance) -> None:
    async with finance.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY($1)",
            list(MODELS),
        )
    columns: dict[str, set[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], set()).add(row["column_name"])
    assert set(columns) == set(MODELS)
    for table, (model, computed) in MODELS.items():
        assert set(model.model_fields) - computed == columns[table], table


async def test_a_posted_proposal_s_header_edit_is_refused_and_publishes_nothing(
    finance: Finance,
) -> None:
    await finance.setup_legal_entity()
    invoice_id = uuid4()
    await finance.header(header_record(invoice_id, expected=1))
    await finance.wait_receipts(1)
    async with finance.pool.acquire() as conn:
        # Posting itself needs lines; the rule reads only the status and the number.
        await conn.execute(
            "UPDATE project_invoice_proposal SET status = 'posted', "
            "invoice_number = 'USPM-CIV-000009' WHERE proposal_id = $1",
            invoice_id,
        )
    before = await finance.get(f"/proposals/{invoice_id}")

    for method in ("PATCH", "PUT"):
        refused = await finance.call(method, f"/proposals/{invoice_id}", {"sales_tax_group": "X"})
        assert refused.status_code == 409, refused.text
        assert "USPM-CIV-000009: its header is read-only" in refused.json()["detail"]

    assert await finance.get(f"/proposals/{invoice_id}") == before
    assert await finance.count("dwsim_outbox WHERE topic LIKE '%proposal-header-changed'") == 0
