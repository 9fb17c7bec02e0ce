"""Header edits made in Finance: what changes, and what is refused (domain rules 1 and 2)."""

from __future__ import annotations

import pytest

from services.finance.domain import (
    ONE_WAY_MESSAGE,
    FinanceRuleError,
    OneWayViolation,
    ProposalStatus,
    edit_proposal_header,
)

PID = "9d6f4c3e-0000-0000-0000-000000000001"
CURRENT = {"sales_tax_group": None, "payment_terms": "Net30"}


def test_only_the_fields_that_differ_change() -> None:
    changes = edit_proposal_header(
        PID,
        ProposalStatus.LINES_IMPORTED,
        None,
        CURRENT,
        {"sales_tax_group": "EXEMPT", "payment_terms": "Net30"},
    )
    assert changes == {"sales_tax_group": "EXEMPT"}


def test_an_edit_that_repeats_the_values_changes_nothing() -> None:
    assert edit_proposal_header(PID, ProposalStatus.OPEN, None, CURRENT, dict(CURRENT)) == {}


def test_a_field_can_be_cleared() -> None:
    changes = edit_proposal_header(PID, ProposalStatus.OPEN, None, CURRENT, {"payment_terms": None})
    assert changes == {"payment_terms": None}


def test_repeating_the_proposal_s_own_id_is_no_rekey() -> None:
    changes = edit_proposal_header(
        PID, ProposalStatus.OPEN, None, CURRENT, {"sales_tax_group": "X"}, new_proposal_id=PID
    )
    assert changes == {"sales_tax_group": "X"}


def test_rekeying_is_refused_as_one_way() -> None:
    other = "9d6f4c3e-0000-0000-0000-000000000002"
    with pytest.raises(OneWayViolation, match=ONE_WAY_MESSAGE):
        edit_proposal_header(PID, ProposalStatus.OPEN, None, CURRENT, {}, new_proposal_id=other)


def test_a_posted_proposal_s_header_is_read_only() -> None:
    with pytest.raises(FinanceRuleError, match=r"posted as invoice USPM-CIV-000001.*read-only"):
        edit_proposal_header(
            PID, ProposalStatus.POSTED, "USPM-CIV-000001", CURRENT, {"sales_tax_group": "X"}
        )


def test_a_field_dataverse_owns_is_refused() -> None:
    with pytest.raises(FinanceRuleError, match="proposal_total"):
        edit_proposal_header(PID, ProposalStatus.OPEN, None, CURRENT, {"proposal_total": "1"})
