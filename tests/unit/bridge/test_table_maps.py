"""The two maps as data: names, legs, directions, and their description for API and CLI."""

from __future__ import annotations

import json
from datetime import timedelta

from services.bridge.domain import (
    AlertAction,
    ErrorType,
)
from services.bridge.mapping import (
    Direction,
    describe,
)
from services.bridge.table_maps import ACTUALS_MAP, DEFAULT_ALERT_RULES, PROPOSAL_MAP


def test_map_names_are_microsofts() -> None:
    assert PROPOSAL_MAP.name == "Project invoice proposal V2 (invoices)"
    assert ACTUALS_MAP.name == "Project Operations integration actuals (msdyn_actuals)"


def test_proposal_map_is_one_way_dataverse_to_finance() -> None:
    assert PROPOSAL_MAP.directions == {Direction.DATAVERSE_TO_FINANCE}
    assert PROPOSAL_MAP.source_topics == ("invoice-confirmed",)
    assert PROPOSAL_MAP.target_topics == ("fo-invoice-proposals",)


def test_actuals_map_has_a_forward_and_a_backward_leg() -> None:
    forward, backward = ACTUALS_MAP.legs
    assert forward.direction is Direction.DATAVERSE_TO_FINANCE
    assert (forward.source_topics, forward.target_topic) == (
        ("actuals-created",),
        "fo-actuals-staging",
    )
    assert backward.direction is Direction.FINANCE_TO_DATAVERSE
    assert (backward.source_topics, backward.target_topic) == (
        ("invoice-posted", "journal-posted"),
        "dv-actuals-accounting",
    )
    assert backward.explode is not None and backward.explode.list_field == "actuals"
    assert ACTUALS_MAP.leg("actuals to staging") is forward


def test_describe_lists_every_leg_and_mapping_as_json() -> None:
    description = describe(ACTUALS_MAP)
    json.dumps(description)  # JSON-compatible throughout

    assert description["name"] == ACTUALS_MAP.name
    assert description["version"] == "1.0"
    forward, backward = description["legs"]
    assert forward["filter"] == [{"kind": "field_not_true", "field": "skip_sync"}]
    assert forward["integration_key"] == ["msdyn_actualid"]
    assert len(forward["field_mappings"]) == len(ACTUALS_MAP.legs[0].field_mappings)
    billing_type = next(m for m in forward["field_mappings"] if m["source"] == "billing_type")
    assert billing_type == {
        "source": "billing_type",
        "target": "msdyn_billingtype",
        "required": False,
        "value_map": {
            "chargeable": "Chargeable",
            "non_chargeable": "NonChargeable",
            "complimentary": "Complimentary",
        },
    }
    assert backward["direction"] == "finance_to_dataverse"
    assert backward["explode"] == {"list_field": "actuals"}
    assert [m["target"] for m in backward["field_mappings"]] == [
        "msdyn_actualid",
        "msdyn_externalreference",
        "msdyn_externalreferencedate",
        "msdyn_exchangerate",
        "msdyn_amountaccountingcurrency",
        "msdyn_salestaxamount",
    ]


def test_describe_proposal_map() -> None:
    (leg,) = describe(PROPOSAL_MAP)["legs"]
    assert leg["direction"] == "dataverse_to_finance"
    assert leg["explode"] is None
    assert leg["filter"] == []
    assert leg["integration_key"] == ["ProposalId"]


def test_each_map_defaults_to_pause_after_10_receipt_time_outs_in_15_minutes() -> None:
    assert {r.map_name for r in DEFAULT_ALERT_RULES} == {PROPOSAL_MAP.name, ACTUALS_MAP.name}
    for rule in DEFAULT_ALERT_RULES:
        assert (rule.error_type, rule.count, rule.window, rule.action) == (
            ErrorType.TIMEOUT,
            10,
            timedelta(minutes=15),
            AlertAction.PAUSE,
        )
