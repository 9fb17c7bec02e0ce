"""Field-by-field mapping of the two table maps, value maps, filters and explode."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.bridge.mapping import (
    Explode,
    FieldEquals,
    FieldMapping,
    Filtered,
    MapDefinitionError,
    MapLeg,
    MappedRecord,
    MappingError,
    MissingSourceField,
    UnmappedValue,
    apply_mapping,
    legs_for_topic,
    map_event,
)
from services.bridge.table_maps import (
    ACCOUNTING_TO_ACTUALS_LEG,
    ACTUALS_MAP,
    ACTUALS_TO_STAGING_LEG,
    PROPOSAL_HEADER_LEG,
    PROPOSAL_MAP,
    TABLE_MAPS,
)


def confirmed_header(**overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "invoice_id": "INV-0001",
        "legal_entity": "USPM",
        "customer_id": "CUST-1",
        "contract_id": "CON-1",
        "currency": "USD",
        "invoice_date": "2025-03-31",
        "total_amount": "1760.00",
        "tax_amount": "160.00",
        "payment_terms": "Net30",
        "invoice_address": "1 Main St, Springfield",
        "expected_billed_lines": 2,
        "is_corrective": False,
        "corrects_invoice_id": None,
    }
    header.update(overrides)
    return header


def billed_actual(**overrides: Any) -> dict[str, Any]:
    actual: dict[str, Any] = {
        "actual_id": "ACT-9",
        "transaction_type": "billed_sales",
        "transaction_class": "time",
        "billing_type": "chargeable",
        "quantity": "8",
        "unit_price": "200.00",
        "amount": "1600.00",
        "currency": "USD",
        "document_date": "2025-03-10",
        "accounting_date": "2025-03-31",
        "legal_entity": "USPM",
        "project_id": "PRJ-1",
        "contract_id": "CON-1",
        "contract_line_id": "CL-1",
        "customer_id": "CUST-1",
        "resource": "RES-ANA",
        "role": "Developer",
        "invoice_id": "INV-0001",
        "billing_method": "time_and_material",
        "unbilled_actual_id": "ACT-3",
        "reverses_actual_id": None,
        "skip_sync": False,
    }
    actual.update(overrides)
    return actual


def mapped(result: MappedRecord | Filtered) -> MappedRecord:
    assert isinstance(result, MappedRecord), result
    return result


def test_confirmed_header_maps_field_by_field() -> None:
    record = mapped(apply_mapping(PROPOSAL_HEADER_LEG, confirmed_header(), PROPOSAL_MAP))

    assert record.map_name == "Project invoice proposal V2 (invoices)"
    assert record.target_topic == "fo-invoice-proposals"
    assert record.key == "INV-0001"
    assert record.payload == {
        "ProposalId": "INV-0001",
        "DataAreaId": "USPM",
        "InvoiceAccount": "CUST-1",
        "ContractId": "CON-1",
        "CurrencyCode": "USD",
        "InvoiceDate": "2025-03-31",
        "ProposalTotal": "1760.00",
        "SalesTaxAmount": "160.00",
        "PaymentTerms": "Net30",
        "InvoiceAddress": "1 Main St, Springfield",
        "ExpectedBilledLines": 2,
        "IsCorrective": False,
        "CorrectedProposalId": None,
    }


def test_corrective_header_carries_the_invoice_it_corrects() -> None:
    header = confirmed_header(
        invoice_id="INV-0002", is_corrective=True, corrects_invoice_id="INV-0001"
    )
    record = mapped(apply_mapping(PROPOSAL_HEADER_LEG, header, PROPOSAL_MAP))
    assert record.payload["IsCorrective"] is True
    assert record.payload["CorrectedProposalId"] == "INV-0001"


def test_values_are_copied_not_reinterpreted() -> None:
    as_decimal = Decimal("1760.00")
    record = mapped(apply_mapping(PROPOSAL_HEADER_LEG, confirmed_header(total_amount=as_decimal)))
    assert record.payload["ProposalTotal"] is as_decimal
    as_string = mapped(apply_mapping(PROPOSAL_HEADER_LEG, confirmed_header()))
    assert as_string.payload["ProposalTotal"] == "1760.00"


def test_absent_optional_field_is_written_as_null() -> None:
    header = confirmed_header()
    del header["payment_terms"], header["invoice_address"], header["corrects_invoice_id"]
    record = mapped(apply_mapping(PROPOSAL_HEADER_LEG, header))
    assert record.payload["PaymentTerms"] is None
    assert record.payload["InvoiceAddress"] is None
    assert record.payload["CorrectedProposalId"] is None


@pytest.mark.parametrize("missing", ["total_amount", "invoice_id", "legal_entity"])
def test_missing_required_field_names_the_field(missing: str) -> None:
    header = confirmed_header()
    del header[missing]
    with pytest.raises(MissingSourceField, match=f"required source field '{missing}'") as info:
        apply_mapping(PROPOSAL_HEADER_LEG, header, PROPOSAL_MAP)
    assert info.value.source_field == missing
    assert "Project invoice proposal V2 (invoices)" in str(info.value)


def test_null_required_field_counts_as_missing() -> None:
    with pytest.raises(MissingSourceField, match="'customer_id'"):
        apply_mapping(PROPOSAL_HEADER_LEG, confirmed_header(customer_id=None))


def test_billed_actual_maps_field_by_field() -> None:
    record = mapped(apply_mapping(ACTUALS_TO_STAGING_LEG, billed_actual(), ACTUALS_MAP))

    assert record.map_name == "Project Operations integration actuals (msdyn_actuals)"
    assert record.target_topic == "fo-actuals-staging"
    assert record.key == "ACT-9"
    assert record.payload == {
        "msdyn_actualid": "ACT-9",
        "msdyn_transactiontype": "BilledSales",
        "msdyn_transactionclassification": "Time",
        "msdyn_billingtype": "Chargeable",
        "msdyn_quantity": "8",
        "msdyn_price": "200.00",
        "msdyn_amount": "1600.00",
        "msdyn_transactioncurrency": "USD",
        "msdyn_documentdate": "2025-03-10",
        "msdyn_accountingdate": "2025-03-31",
        "msdyn_legalentity": "USPM",
        "msdyn_project": "PRJ-1",
        "msdyn_contract": "CON-1",
        "msdyn_contractline": "CL-1",
        "msdyn_customer": "CUST-1",
        "msdyn_bookableresource": "RES-ANA",
        "msdyn_resourcecategory": "Developer",
        "msdyn_invoice": "INV-0001",
        "msdyn_billingmethod": "TimeAndMaterial",
        "msdyn_unbilledactual": "ACT-3",
        "msdyn_reversedactual": None,
    }
    assert "skip_sync" not in record.payload


@pytest.mark.parametrize(
    ("source_field", "target_field", "value", "option"),
    [
        ("transaction_type", "msdyn_transactiontype", "cost", "Cost"),
        ("transaction_type", "msdyn_transactiontype", "unbilled_sales", "UnbilledSales"),
        ("transaction_type", "msdyn_transactiontype", "billed_sales", "BilledSales"),
        ("transaction_class", "msdyn_transactionclassification", "time", "Time"),
        ("transaction_class", "msdyn_transactionclassification", "expense", "Expense"),
        ("transaction_class", "msdyn_transactionclassification", "material", "Material"),
        ("transaction_class", "msdyn_transactionclassification", "milestone", "Milestone"),
        ("transaction_class", "msdyn_transactionclassification", "fee", "Fee"),
        ("billing_type", "msdyn_billingtype", "chargeable", "Chargeable"),
        ("billing_type", "msdyn_billingtype", "non_chargeable", "NonChargeable"),
        ("billing_type", "msdyn_billingtype", "complimentary", "Complimentary"),
        ("billing_method", "msdyn_billingmethod", "time_and_material", "TimeAndMaterial"),
        ("billing_method", "msdyn_billingmethod", "fixed_price", "FixedPrice"),
    ],
)
def test_value_maps_translate_option_sets(
    source_field: str, target_field: str, value: str, option: str
) -> None:
    record = mapped(apply_mapping(ACTUALS_TO_STAGING_LEG, billed_actual(**{source_field: value})))
    assert record.payload[target_field] == option


def test_unknown_option_is_refused_naming_field_and_value() -> None:
    with pytest.raises(UnmappedValue, match="'overtime' of source field 'transaction_class'"):
        apply_mapping(ACTUALS_TO_STAGING_LEG, billed_actual(transaction_class="overtime"))


def test_optional_option_set_field_may_be_absent() -> None:
    cost = billed_actual(
        transaction_type="cost", billing_type=None, billing_method=None, invoice_id=None
    )
    record = mapped(apply_mapping(ACTUALS_TO_STAGING_LEG, cost))
    assert record.payload["msdyn_billingtype"] is None
    assert record.payload["msdyn_billingmethod"] is None
    assert record.payload["msdyn_invoice"] is None


def test_skip_sync_actual_is_filtered_with_reason_and_key() -> None:
    reversal = billed_actual(transaction_type="unbilled_sales", amount="-1600.00", skip_sync=True)
    result = apply_mapping(ACTUALS_TO_STAGING_LEG, reversal, ACTUALS_MAP)
    assert result == Filtered(
        map_name="Project Operations integration actuals (msdyn_actuals)",
        leg_name="actuals to staging",
        reason="skip sync",
        source_key="ACT-9",
    )


@pytest.mark.parametrize("flag", [False, None])
def test_actual_without_skip_sync_passes_the_filter(flag: bool | None) -> None:
    actual = billed_actual(skip_sync=flag)
    assert isinstance(apply_mapping(ACTUALS_TO_STAGING_LEG, actual), MappedRecord)
    del actual["skip_sync"]
    assert isinstance(apply_mapping(ACTUALS_TO_STAGING_LEG, actual), MappedRecord)


def test_non_boolean_skip_sync_is_an_error_not_a_guess() -> None:
    with pytest.raises(MappingError, match="'skip_sync' must be true, false or absent"):
        apply_mapping(ACTUALS_TO_STAGING_LEG, billed_actual(skip_sync="true"))


def test_filtered_record_is_not_mapped_so_missing_fields_do_not_fail_it() -> None:
    result = apply_mapping(ACTUALS_TO_STAGING_LEG, {"actual_id": "ACT-1", "skip_sync": True})
    assert isinstance(result, Filtered)


def test_field_equals_filter() -> None:
    leg = MapLeg(
        name="only confirmed",
        direction=ACTUALS_TO_STAGING_LEG.direction,
        source_topics=("t",),
        target_topic="u",
        filter=(FieldEquals("status", "confirmed"),),
        field_mappings=(FieldMapping("id", "Id"),),
        integration_key=("Id",),
    )
    assert isinstance(apply_mapping(leg, {"id": "1", "status": "confirmed"}), MappedRecord)
    filtered = apply_mapping(leg, {"id": "2", "status": "draft"})
    assert isinstance(filtered, Filtered)
    assert filtered.reason == "status is not 'confirmed'"
    assert filtered.source_key == "2"


def posting_event() -> dict[str, Any]:
    return {
        "invoice_id": "INV-0001",
        "invoice_number": "CIV-000123",
        "actuals": [
            {
                "actual_id": "ACT-9",
                "voucher": "V-1001",
                "voucher_date": "2025-04-01",
                "exchange_rate": "1.0",
                "accounting_currency_amount": "1600.00",
                "tax_amount": "160.00",
            },
            {
                "actual_id": "ACT-10",
                "voucher": "V-1001",
                "voucher_date": "2025-04-01",
                "exchange_rate": "1.0",
                "accounting_currency_amount": "400.00",
                "tax_amount": "0.00",
            },
        ],
    }


def test_posting_event_explodes_into_one_record_per_actual() -> None:
    results = map_event(ACCOUNTING_TO_ACTUALS_LEG, posting_event(), ACTUALS_MAP)

    records = [mapped(r) for r in results]
    assert [r.key for r in records] == ["ACT-9", "ACT-10"]
    assert {r.target_topic for r in records} == {"dv-actuals-accounting"}
    assert records[0].payload == {
        "msdyn_actualid": "ACT-9",
        "msdyn_externalreference": "V-1001",
        "msdyn_externalreferencedate": "2025-04-01",
        "msdyn_exchangerate": "1.0",
        "msdyn_amountaccountingcurrency": "1600.00",
        "msdyn_salestaxamount": "160.00",
    }


def test_journal_posting_without_tax_maps_tax_as_null() -> None:
    event = {
        "actuals": [
            {
                "actual_id": "ACT-1",
                "voucher": "JV-7",
                "voucher_date": "2025-03-31",
                "exchange_rate": "1.0",
                "accounting_currency_amount": "800.00",
            }
        ]
    }
    (result,) = map_event(ACCOUNTING_TO_ACTUALS_LEG, event)
    assert mapped(result).payload["msdyn_salestaxamount"] is None


def test_explode_of_empty_list_gives_no_records() -> None:
    assert map_event(ACCOUNTING_TO_ACTUALS_LEG, {"actuals": []}) == []


def test_explode_without_list_field_names_it() -> None:
    with pytest.raises(MissingSourceField, match="'actuals'"):
        map_event(ACCOUNTING_TO_ACTUALS_LEG, {"invoice_id": "INV-0001"})


def test_explode_of_non_list_is_an_error() -> None:
    with pytest.raises(MappingError, match="must be a list of objects"):
        map_event(ACCOUNTING_TO_ACTUALS_LEG, {"actuals": "ACT-1"})


def test_explode_element_missing_required_field_names_it() -> None:
    event = posting_event()
    del event["actuals"][1]["voucher"]
    with pytest.raises(MissingSourceField, match="'voucher'"):
        map_event(ACCOUNTING_TO_ACTUALS_LEG, event)


def test_map_event_without_explode_gives_one_result() -> None:
    (result,) = map_event(PROPOSAL_HEADER_LEG, confirmed_header())
    assert mapped(result).key == "INV-0001"


def test_composite_integration_key_is_joined() -> None:
    leg = MapLeg(
        name="composite",
        direction=ACTUALS_TO_STAGING_LEG.direction,
        source_topics=("t",),
        target_topic="u",
        field_mappings=(FieldMapping("le", "DataAreaId"), FieldMapping("id", "Id")),
        integration_key=("DataAreaId", "Id"),
    )
    assert mapped(apply_mapping(leg, {"le": "USPM", "id": "7"})).key == "USPM|7"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"integration_key": ("Nope",)}, "'Nope' is not a target field"),
        ({"integration_key": ()}, "empty integration key"),
        ({"source_topics": ()}, "no source topic"),
        (
            {"field_mappings": (FieldMapping("a", "A"), FieldMapping("b", "A"))},
            "mapped twice",
        ),
        (
            {"field_mappings": (FieldMapping("id", "Id", required=False),)},
            "optional source field 'id'",
        ),
    ],
)
def test_inconsistent_leg_definitions_are_refused(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "name": "bad",
        "direction": ACTUALS_TO_STAGING_LEG.direction,
        "source_topics": ("t",),
        "target_topic": "u",
        "field_mappings": (FieldMapping("id", "Id"),),
        "integration_key": ("Id",),
        "explode": Explode("items"),
    }
    base.update(kwargs)
    with pytest.raises(MapDefinitionError, match=message):
        MapLeg(**base)


def test_legs_for_topic_routes_events() -> None:
    assert legs_for_topic(TABLE_MAPS, "invoice-confirmed") == [(PROPOSAL_MAP, PROPOSAL_HEADER_LEG)]
    assert legs_for_topic(TABLE_MAPS, "journal-posted") == [
        (ACTUALS_MAP, ACCOUNTING_TO_ACTUALS_LEG)
    ]
    assert legs_for_topic(TABLE_MAPS, "sync-receipts") == []


def test_error_without_map_names_the_leg_only() -> None:
    with pytest.raises(MissingSourceField) as info:
        apply_mapping(PROPOSAL_HEADER_LEG, confirmed_header(currency=None))
    assert str(info.value) == "leg 'proposal header': required source field 'currency' is missing"
