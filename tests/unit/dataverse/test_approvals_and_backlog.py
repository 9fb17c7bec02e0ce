"""Approving entries, cancelling approvals and the billing backlog (domain.md, steps 1 and 4)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from uuid import UUID

import pytest

from schemas.vocabulary import (
    AdjustmentStatus,
    BillingMethod,
    BillingStatus,
    BillingType,
    MilestoneInvoiceStatus,
    TransactionClass,
    TransactionType,
)
from services.dataverse.domain import (
    AccountingDetail,
    ActualNotInvoiceableError,
    Contract,
    ContractLine,
    InvalidTransitionError,
    Milestone,
    MsdynActual,
    ProjectEntry,
    approve_entry,
    cancel_approval,
    mark_milestone_ready,
    mark_ready_to_invoice,
    record_finance_posting,
    record_milestone_posted,
)

D = Decimal
U = TransactionType.UNBILLED_SALES
C = TransactionType.COST
CH = BillingType.CHARGEABLE
NC = BillingType.NON_CHARGEABLE
CREATED = BillingStatus.UNBILLED_SALES_CREATED
NONE = AdjustmentStatus.NONE
ADJUSTED = AdjustmentStatus.ADJUSTED
UNADJ = AdjustmentStatus.UNADJUSTABLE

WORK_DAY = date(2025, 3, 3)
APPROVED_ON = date(2025, 3, 4)
CANCELLED_ON = date(2025, 3, 10)
PROJECT = UUID(int=0xA1)
CONTRACT = Contract(
    contract_id=UUID(int=0xC0), customer_id=UUID(int=0xCC), currency="USD", legal_entity="USMF"
)
TM_LINE = ContractLine(
    contract_line_id=UUID(int=0xC1),
    contract_id=CONTRACT.contract_id,
    project_id=PROJECT,
    billing_method=BillingMethod.TIME_AND_MATERIAL,
    default_bill_rate=D("200"),
    default_cost_rate=D("100"),
    bill_rates={"architect": D("250")},
    cost_rates={"architect": D("120")},
)
FP_LINE = ContractLine(
    contract_line_id=UUID(int=0xC2),
    contract_id=CONTRACT.contract_id,
    project_id=PROJECT,
    billing_method=BillingMethod.FIXED_PRICE,
)


class Ids:
    """Deterministic ids: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> UUID:
        self._n += 1
        return UUID(int=self._n)


@pytest.fixture
def new_id() -> Iterator[Ids]:
    yield Ids()


def row(
    a: MsdynActual,
) -> tuple[object, ...]:
    """What every assertion on an actual checks."""
    return (
        a.transaction_type,
        a.quantity,
        a.amount,
        a.billing_type,
        a.billing_status,
        a.adjustment_status,
        a.skip_sync,
    )


def time_entry(
    quantity: str = "8", billable: str | None = None, line: ContractLine = TM_LINE
) -> ProjectEntry:
    return ProjectEntry(
        entry_id=UUID(int=0xE1),
        transaction_class=TransactionClass.TIME,
        project_id=PROJECT,
        contract_line_id=line.contract_line_id,
        quantity=D(quantity),
        billable_quantity=D(billable if billable is not None else quantity),
        cost_rate=line.cost_rate_for("developer"),
        bill_rate=line.bill_rate_for("developer"),
        document_date=WORK_DAY,
        resource="Ana",
        role="developer",
    )


def approve(entry: ProjectEntry, new_id: Ids, line: ContractLine = TM_LINE) -> list[MsdynActual]:
    return list(
        approve_entry(
            entry,
            contract=CONTRACT,
            contract_line=line,
            accounting_date=APPROVED_ON,
            new_id=new_id,
        )
    )


# ---- 1. approval ---------------------------------------------------------------------------


def test_approving_8_hours_makes_cost_800_and_chargeable_unbilled_1600(new_id: Ids) -> None:
    actuals = approve(time_entry("8"), new_id)

    assert [row(a) for a in actuals] == [
        (C, D("8"), D("800"), CH, None, NONE, False),
        (U, D("8"), D("1600"), CH, CREATED, NONE, False),
    ]
    cost, unbilled = actuals
    assert cost.unit_price == D("100") and unbilled.unit_price == D("200")
    for a in actuals:
        assert a.currency == "USD"
        assert a.legal_entity == "USMF"
        assert a.customer_id == CONTRACT.customer_id
        assert a.contract_line_id == TM_LINE.contract_line_id
        assert a.document_date == WORK_DAY and a.accounting_date == APPROVED_ON
        assert a.entry_id == UUID(int=0xE1)
        assert a.billing_method is BillingMethod.TIME_AND_MATERIAL
        assert a.invoice_id is None and not a.ready_to_invoice
    assert len({a.actual_id for a in actuals}) == 2


def test_billable_cut_to_6_splits_unbilled_into_chargeable_and_non_chargeable(
    new_id: Ids,
) -> None:
    actuals = approve(time_entry("8", billable="6"), new_id)

    assert [row(a) for a in actuals] == [
        (C, D("8"), D("800"), CH, None, NONE, False),
        (U, D("6"), D("1200"), CH, CREATED, NONE, False),
        (U, D("2"), D("400"), NC, CREATED, NONE, False),
    ]


def test_billable_raised_to_10_bills_10_hours_while_cost_stays_at_8(new_id: Ids) -> None:
    actuals = approve(time_entry("8", billable="10"), new_id)

    assert [row(a) for a in actuals] == [
        (C, D("8"), D("800"), CH, None, NONE, False),
        (U, D("10"), D("2000"), CH, CREATED, NONE, False),
    ]


def test_nothing_billable_makes_only_non_chargeable_unbilled(new_id: Ids) -> None:
    actuals = approve(time_entry("8", billable="0"), new_id)

    assert [row(a) for a in actuals] == [
        (C, D("8"), D("800"), NC, None, NONE, False),
        (U, D("8"), D("1600"), NC, CREATED, NONE, False),
    ]


def test_fixed_price_line_entries_make_cost_only(new_id: Ids) -> None:
    actuals = approve(time_entry("8", line=FP_LINE), new_id, line=FP_LINE)

    assert [(a.transaction_type, a.quantity) for a in actuals] == [(C, D("8"))]


def test_role_rates_come_from_the_contract_line() -> None:
    assert TM_LINE.bill_rate_for("architect") == D("250")
    assert TM_LINE.cost_rate_for("architect") == D("120")
    assert TM_LINE.bill_rate_for("developer") == D("200")
    assert TM_LINE.cost_rate_for(None) == D("100")


# ---- 2. cancelling an approval -------------------------------------------------------------


def test_cancelling_an_approval_reverses_every_actual(new_id: Ids) -> None:
    actuals = approve(time_entry("8", billable="6"), new_id)

    changes = cancel_approval(UUID(int=0xE1), actuals, accounting_date=CANCELLED_ON, new_id=new_id)

    cancelled = BillingStatus.CANCELED
    assert [row(a) for a in changes.updated_actuals] == [
        (C, D("8"), D("800"), CH, None, ADJUSTED, False),
        (U, D("6"), D("1200"), CH, cancelled, ADJUSTED, False),
        (U, D("2"), D("400"), NC, cancelled, ADJUSTED, False),
    ]
    assert [row(a) for a in changes.new_actuals] == [
        (C, D("-8"), D("-800"), CH, None, UNADJ, False),
        (U, D("-6"), D("-1200"), CH, cancelled, UNADJ, False),
        (U, D("-2"), D("-400"), NC, cancelled, UNADJ, False),
    ]
    for original, reversal in zip(actuals, changes.new_actuals, strict=True):
        assert reversal.reverses_actual_id == original.actual_id
        assert reversal.actual_id != original.actual_id
        assert reversal.accounting_date == CANCELLED_ON
        assert reversal.document_date == original.document_date
    assert [a.actual_id for a in changes.updated_actuals] == [a.actual_id for a in actuals]


def test_cancelling_twice_is_refused(new_id: Ids) -> None:
    actuals = approve(time_entry("8"), new_id)
    first = cancel_approval(UUID(int=0xE1), actuals, accounting_date=CANCELLED_ON, new_id=new_id)

    with pytest.raises(InvalidTransitionError, match=str(UUID(int=0xE1))):
        cancel_approval(
            UUID(int=0xE1),
            [*first.updated_actuals, *first.new_actuals],
            accounting_date=CANCELLED_ON,
            new_id=new_id,
        )


def test_cancelling_an_approval_already_on_an_invoice_is_refused(new_id: Ids) -> None:
    cost, unbilled = approve(time_entry("8"), new_id)
    on_draft = replace(unbilled, billing_status=BillingStatus.CUSTOMER_INVOICE_CREATED)

    with pytest.raises(InvalidTransitionError, match="once invoiced"):
        cancel_approval(
            UUID(int=0xE1), [cost, on_draft], accounting_date=CANCELLED_ON, new_id=new_id
        )


# ---- 3. billing backlog --------------------------------------------------------------------


def test_chargeable_unbilled_sales_can_be_marked_ready_and_not_ready(new_id: Ids) -> None:
    _, unbilled = approve(time_entry("8"), new_id)

    ready = mark_ready_to_invoice(unbilled)
    assert ready.ready_to_invoice
    assert row(ready) == row(unbilled)
    assert not mark_ready_to_invoice(ready, ready=False).ready_to_invoice


@pytest.mark.parametrize("ready", [True, False])
def test_adjusted_and_unadjustable_actuals_can_never_be_marked_ready(
    new_id: Ids, ready: bool
) -> None:
    actuals = approve(time_entry("8"), new_id)
    changes = cancel_approval(UUID(int=0xE1), actuals, accounting_date=CANCELLED_ON, new_id=new_id)
    adjusted = changes.updated_actuals[1]
    unadjustable = changes.new_actuals[1]

    for actual in (adjusted, unadjustable):
        with pytest.raises(ActualNotInvoiceableError, match="can never be invoiced") as err:
            mark_ready_to_invoice(actual, ready=ready)
        assert str(actual.actual_id) in str(err.value)


def test_cost_and_non_chargeable_actuals_cannot_be_marked_ready(new_id: Ids) -> None:
    cost, _, non_chargeable = approve(time_entry("8", billable="6"), new_id)

    with pytest.raises(ActualNotInvoiceableError, match="only unbilled sales"):
        mark_ready_to_invoice(cost)
    with pytest.raises(ActualNotInvoiceableError, match="only chargeable"):
        mark_ready_to_invoice(non_chargeable)


def test_milestone_moves_between_not_ready_and_ready_only() -> None:
    milestone = Milestone(
        milestone_id=UUID(int=0x11),
        contract_id=CONTRACT.contract_id,
        contract_line_id=FP_LINE.contract_line_id,
        project_id=PROJECT,
        amount=D("5000"),
        milestone_date=WORK_DAY,
    )
    ready = mark_milestone_ready(milestone)
    assert ready.invoice_status is MilestoneInvoiceStatus.READY
    assert mark_milestone_ready(ready, ready=False).invoice_status is (
        MilestoneInvoiceStatus.NOT_READY
    )
    invoiced = replace(ready, invoice_status=MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED)
    with pytest.raises(InvalidTransitionError, match=str(milestone.milestone_id)):
        mark_milestone_ready(invoiced, ready=False)
    assert record_milestone_posted(invoiced).invoice_status is (
        MilestoneInvoiceStatus.CUSTOMER_INVOICE_POSTED
    )
    with pytest.raises(InvalidTransitionError):
        record_milestone_posted(ready)


# ---- accounting detail from Finance --------------------------------------------------------


def test_finance_posting_stamps_accounting_detail_and_posts_billed_sales(new_id: Ids) -> None:
    cost, unbilled = approve(time_entry("8"), new_id)
    billed = replace(
        unbilled,
        transaction_type=TransactionType.BILLED_SALES,
        billing_status=BillingStatus.CUSTOMER_INVOICE_CREATED,
    )
    detail = AccountingDetail(
        voucher="PINV-000001",
        voucher_date=date(2025, 3, 31),
        exchange_rate=D("1.1"),
        accounting_currency_amount=D("1760.00"),
        tax_amount=D("160.00"),
    )

    posted = record_finance_posting(billed, detail)
    stamped_cost = record_finance_posting(cost, detail)

    assert posted.billing_status is BillingStatus.CUSTOMER_INVOICE_POSTED
    assert (posted.voucher, posted.voucher_date, posted.exchange_rate) == (
        "PINV-000001",
        date(2025, 3, 31),
        D("1.1"),
    )
    assert posted.accounting_currency_amount == D("1760.00")
    assert posted.tax_amount == D("160.00")
    assert stamped_cost.billing_status is None
    assert stamped_cost.voucher == "PINV-000001"
    assert (posted.quantity, posted.amount) == (billed.quantity, billed.amount)
