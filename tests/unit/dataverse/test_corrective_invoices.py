"""Corrective invoices (domain.md, "Correcting a confirmed invoice").

Microsoft's example: 8 h at bill rate 200 invoiced and confirmed, then corrected down to 5 h,
up to 10 h, or credited in full; and a 5,000 milestone credited in full.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

import pytest

from schemas.vocabulary import (
    AdjustmentStatus,
    BillingMethod,
    BillingStatus,
    BillingType,
    InvoiceStatus,
    MilestoneInvoiceStatus,
    TransactionClass,
    TransactionType,
)
from services.dataverse.domain import (
    ActualNotInvoiceableError,
    Changes,
    ConfirmResult,
    Contract,
    ContractLine,
    InvalidEditError,
    InvalidTransitionError,
    Milestone,
    MsdynActual,
    ProformaInvoice,
    ProjectEntry,
    approve_entry,
    confirm_invoice,
    correct_invoice,
    create_proforma_invoice,
    edit_detail,
    mark_ready_to_invoice,
)

D = Decimal
U = TransactionType.UNBILLED_SALES
B = TransactionType.BILLED_SALES
CH = BillingType.CHARGEABLE
UNBILLED = BillingStatus.UNBILLED_SALES_CREATED
INV_CREATED = BillingStatus.CUSTOMER_INVOICE_CREATED
INV_POSTED = BillingStatus.CUSTOMER_INVOICE_POSTED
NONE = AdjustmentStatus.NONE
ADJUSTED = AdjustmentStatus.ADJUSTED
UNADJ = AdjustmentStatus.UNADJUSTABLE

WORK_DAY = date(2025, 3, 3)
INVOICE_DAY = date(2025, 3, 31)
CORRECTION_DAY = date(2025, 4, 15)
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
)
FP_LINE = ContractLine(
    contract_line_id=UUID(int=0xC2),
    contract_id=CONTRACT.contract_id,
    project_id=PROJECT,
    billing_method=BillingMethod.FIXED_PRICE,
)
MILESTONE_ID = UUID(int=0x11)


class Ids:
    """Deterministic ids: 1, 2, 3, ..."""

    def __init__(self) -> None:
        self._n = 0

    def __call__(self) -> UUID:
        self._n += 1
        return UUID(int=self._n)


class World:
    """A fake repository holding the records, with an invoice already confirmed."""

    def __init__(self, *, hours: str | None = "8", milestone: bool = False) -> None:
        self.new_id = Ids()
        self.actuals: dict[UUID, MsdynActual] = {}
        self.milestones: dict[UUID, Milestone] = {}
        if hours is not None:
            made = approve_entry(
                ProjectEntry(
                    entry_id=self.new_id(),
                    transaction_class=TransactionClass.TIME,
                    project_id=PROJECT,
                    contract_line_id=TM_LINE.contract_line_id,
                    quantity=D(hours),
                    billable_quantity=D(hours),
                    cost_rate=D("100"),
                    bill_rate=D("200"),
                    document_date=WORK_DAY,
                    resource="Ana",
                    role="developer",
                ),
                contract=CONTRACT,
                contract_line=TM_LINE,
                accounting_date=WORK_DAY,
                new_id=self.new_id,
            )
            self.apply(Changes(new_actuals=(made[0], mark_ready_to_invoice(made[1]))))
        if milestone:
            self.milestones[MILESTONE_ID] = Milestone(
                milestone_id=MILESTONE_ID,
                contract_id=CONTRACT.contract_id,
                contract_line_id=FP_LINE.contract_line_id,
                project_id=PROJECT,
                amount=D("5000"),
                milestone_date=WORK_DAY,
                invoice_status=MilestoneInvoiceStatus.READY,
            )
        draft = create_proforma_invoice(
            CONTRACT,
            [TM_LINE, FP_LINE],
            self.actuals.values(),
            self.milestones.values(),
            invoice_date=INVOICE_DAY,
            new_id=self.new_id,
        )
        self.apply(draft)
        self.original = self.confirm(draft.invoice).invoice

    def apply(self, changes: Changes) -> None:
        for a in (*changes.updated_actuals, *changes.new_actuals):
            self.actuals[a.actual_id] = a
        for m in changes.updated_milestones:
            self.milestones[m.milestone_id] = m

    def confirm(self, invoice: ProformaInvoice) -> ConfirmResult:
        result = confirm_invoice(
            invoice,
            self.actuals,
            self.milestones,
            accounting_date=CORRECTION_DAY,
            new_id=self.new_id,
        )
        self.apply(result)
        return result

    def correct(self) -> ProformaInvoice:
        return correct_invoice(
            self.original,
            self.actuals.values(),
            invoice_date=CORRECTION_DAY,
            new_id=self.new_id,
        )

    def billed(self, invoice: ProformaInvoice) -> list[MsdynActual]:
        return [
            a
            for a in self.actuals.values()
            if a.invoice_id == invoice.invoice_id and a.transaction_type is B
        ]


def row(a: MsdynActual) -> tuple[object, ...]:
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


def test_corrective_draft_starts_as_a_full_credit() -> None:
    world = World()
    (original_billed,) = world.billed(world.original)

    corrective = world.correct()

    assert corrective.status is InvoiceStatus.DRAFT
    assert corrective.is_corrective
    assert corrective.corrects_invoice_id == world.original.invoice_id
    assert corrective.invoice_id != world.original.invoice_id
    assert (corrective.currency, corrective.contract_id) == ("USD", CONTRACT.contract_id)
    (detail,) = corrective.details
    assert (detail.quantity, detail.original_quantity) == (D("0"), D("8"))
    assert detail.billed_actual_id == original_billed.actual_id
    assert detail.amount == D("-1600")
    assert corrective.total_amount == D("-1600")


def test_correction_down_8_to_5() -> None:
    world = World()
    (original_billed,) = world.billed(world.original)
    corrective = world.correct()
    corrective = edit_detail(corrective, corrective.details[0].detail_id, quantity=D("5"))
    assert corrective.total_amount == D("-600")

    result = world.confirm(corrective)

    assert [row(a) for a in result.updated_actuals] == [
        (B, D("8"), D("1600"), CH, INV_CREATED, ADJUSTED, False)
    ]
    new = list(result.new_actuals)
    assert [row(a) for a in new] == [
        (B, D("-8"), D("-1600"), CH, INV_CREATED, UNADJ, False),
        (U, D("5"), D("1000"), CH, INV_POSTED, NONE, False),
        (U, D("-5"), D("-1000"), CH, INV_POSTED, UNADJ, True),
        (B, D("5"), D("1000"), CH, INV_CREATED, NONE, False),
        (U, D("3"), D("600"), CH, UNBILLED, NONE, False),
    ]
    credit, unbilled, reversal, rebilled, backlog = new
    assert credit.reverses_actual_id == original_billed.actual_id
    assert reversal.reverses_actual_id == unbilled.actual_id
    assert rebilled.unbilled_actual_id == unbilled.actual_id
    assert credit.unbilled_actual_id == original_billed.unbilled_actual_id is not None
    assert backlog.unbilled_actual_id is None
    for a in (credit, unbilled, reversal, rebilled):
        assert a.invoice_id == corrective.invoice_id
    assert backlog.invoice_id is None
    assert not backlog.ready_to_invoice
    assert result.expected_billed_sales_count == 2
    assert result.invoice.status is InvoiceStatus.CONFIRMED
    assert result.invoice.total_amount == D("-600")
    assert sum(a.amount for a in new if a.transaction_type is B) == D("-600")


def test_correction_up_8_to_10() -> None:
    world = World()
    corrective = world.correct()
    corrective = edit_detail(corrective, corrective.details[0].detail_id, quantity=D("10"))

    result = world.confirm(corrective)

    assert [row(a) for a in result.updated_actuals] == [
        (B, D("8"), D("1600"), CH, INV_CREATED, ADJUSTED, False)
    ]
    assert [row(a) for a in result.new_actuals] == [
        (B, D("-8"), D("-1600"), CH, INV_CREATED, UNADJ, False),
        (U, D("10"), D("2000"), CH, INV_POSTED, NONE, False),
        (U, D("-10"), D("-2000"), CH, INV_POSTED, UNADJ, True),
        (B, D("10"), D("2000"), CH, INV_CREATED, NONE, False),
    ]
    assert result.expected_billed_sales_count == 2
    assert result.invoice.total_amount == D("400")


def test_full_credit_puts_everything_back_in_the_backlog() -> None:
    world = World()
    corrective = world.correct()

    result = world.confirm(corrective)

    assert [row(a) for a in result.new_actuals] == [
        (B, D("-8"), D("-1600"), CH, INV_CREATED, UNADJ, False),
        (U, D("8"), D("1600"), CH, UNBILLED, NONE, False),
    ]
    assert result.expected_billed_sales_count == 1
    assert result.invoice.total_amount == D("-1600")


def test_detail_left_at_its_billed_quantity_changes_nothing() -> None:
    world = World()
    corrective = world.correct()
    corrective = edit_detail(corrective, corrective.details[0].detail_id, quantity=D("8"))
    assert corrective.total_amount == D("0")

    result = world.confirm(corrective)

    assert result.updated_actuals == () and result.new_actuals == ()
    assert result.expected_billed_sales_count == 0


def test_milestone_invoice_and_its_full_credit() -> None:
    world = World(hours=None, milestone=True)
    (billed,) = world.billed(world.original)
    assert row(billed) == (B, D("1"), D("5000"), CH, INV_CREATED, NONE, False)
    assert world.milestones[MILESTONE_ID].invoice_status is (
        MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED
    )
    corrective = world.correct()
    (detail,) = corrective.details
    assert detail.milestone_id == MILESTONE_ID
    assert corrective.total_amount == D("-5000")

    result = world.confirm(corrective)

    assert [row(a) for a in result.updated_actuals] == [
        (B, D("1"), D("5000"), CH, INV_CREATED, ADJUSTED, False)
    ]
    (credit,) = result.new_actuals
    assert row(credit) == (B, D("-1"), D("-5000"), CH, INV_CREATED, UNADJ, False)
    assert credit.milestone_id == MILESTONE_ID
    assert credit.invoice_id == corrective.invoice_id
    assert credit.reverses_actual_id == billed.actual_id
    (milestone,) = result.updated_milestones
    assert milestone.invoice_status is MilestoneInvoiceStatus.READY
    assert result.expected_billed_sales_count == 1
    assert result.invoice.total_amount == D("-5000")


def test_milestone_can_only_be_credited_in_full() -> None:
    world = World(hours=None, milestone=True)
    corrective = world.correct()
    detail_id = corrective.details[0].detail_id

    with pytest.raises(InvalidEditError, match="credited in full"):
        edit_detail(corrective, detail_id, quantity=D("0.5"))
    unchanged = edit_detail(corrective, detail_id, quantity=D("1"))
    assert unchanged.total_amount == D("0")


def test_corrective_detail_keeps_its_billing_type() -> None:
    world = World()
    corrective = world.correct()

    with pytest.raises(InvalidEditError, match="billing type"):
        edit_detail(
            corrective, corrective.details[0].detail_id, billing_type=BillingType.COMPLIMENTARY
        )


def test_correcting_a_non_confirmed_invoice_is_refused() -> None:
    world = World()
    corrective = world.correct()

    with pytest.raises(InvalidTransitionError, match=str(corrective.invoice_id)):
        correct_invoice(
            corrective, world.actuals.values(), invoice_date=CORRECTION_DAY, new_id=world.new_id
        )


def test_billed_sales_corrected_once_cannot_be_corrected_again() -> None:
    world = World()
    first = world.correct()
    second = world.correct()
    confirmed_first = world.confirm(
        edit_detail(first, first.details[0].detail_id, quantity=D("5"))
    ).invoice

    with pytest.raises(ActualNotInvoiceableError, match="already corrected"):
        world.confirm(second)
    with pytest.raises(InvalidTransitionError, match="no billed sales left"):
        world.correct()
    # What the corrective invoice billed can itself be corrected; its credit line cannot.
    again = correct_invoice(
        confirmed_first, world.actuals.values(), invoice_date=CORRECTION_DAY, new_id=world.new_id
    )
    assert [(d.quantity, d.original_quantity) for d in again.details] == [(D("0"), D("5"))]
    assert again.corrects_invoice_id == confirmed_first.invoice_id
