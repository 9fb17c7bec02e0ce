"""Bridge record identity and the check of mapped records against the target schema."""

from __future__ import annotations

from uuid import uuid4

from services.bridge.mapping import (
    MappingError,
)
from services.bridge.records import map_record, record_id_for
from services.bridge.table_maps import PROPOSAL_HEADER_LEG, PROPOSAL_MAP


def test_record_id_is_stable_for_one_record_of_one_event_and_differs_otherwise() -> None:
    event = uuid4()
    assert record_id_for(event, "leg", "k1") == record_id_for(event, "leg", "k1")
    assert record_id_for(event, "leg", "k1") != record_id_for(event, "leg", "k2")
    assert record_id_for(event, "leg", "k1") != record_id_for(event, "other", "k1")
    assert record_id_for(event, "leg", "k1") != record_id_for(uuid4(), "leg", "k1")


def test_mapped_record_that_does_not_fit_the_target_schema_fails_with_the_field() -> None:
    header = {
        "invoice_id": str(uuid4()),
        "legal_entity": "USPM",
        "customer_id": str(uuid4()),
        "contract_id": str(uuid4()),
        "currency": "USDOLLAR",
        "invoice_date": "2026-11-30",
        "total_amount": "100",
        "tax_amount": "0",
        "expected_billed_lines": 1,
        "is_corrective": False,
    }
    mapped, failure = map_record(PROPOSAL_HEADER_LEG, header, PROPOSAL_MAP)
    assert mapped is None
    assert isinstance(failure, MappingError)
    assert "CurrencyCode" in str(failure)
    header["currency"] = "USD"
    mapped, failure = map_record(PROPOSAL_HEADER_LEG, header, PROPOSAL_MAP)
    assert failure is None and mapped is not None
    assert mapped.key == header["invoice_id"]
