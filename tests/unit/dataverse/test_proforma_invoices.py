"""Proforma invoices: creation from the backlog, draft editing, confirmation (domain.md, 5-6).

Test vectors are Microsoft's time-and-material example: 8 h at cost rate 100 and bill rate 200,
invoiced unchanged, lowered to 6 h and raised to 10 h; and a 5,000 milestone.
"""

from __future__ import annotations

from collections.abc import Callable
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
    InvoiceStatus,
    MilestoneInvoiceStatus,
    TransactionClass,
    TransactionType,
)
from services.common.settings import Settings
from services.dataverse import events
from services.dataverse.domain import (
    ActualNotInvoiceableError,
    Changes,
    Contract,
    ContractLine,
    InvalidEditError,
    InvalidTransitionError,
    InvoiceConfirmedError,
    Milestone,
    MsdynActual,
    NothingToInvoiceError,
    ProformaInvoice,
    ProjectEntry,
    approve_entry,
    cancel_approval,
    confirm_invoice,
    create_proforma_invoice,
    delete_detail,
    delete_invoice,
    edit_detail,
    mark_ready_to_invoice,
    return_to_draft,
    set_tax,
    submit_for_review,
)

D = Decimal
U = TransactionType.UNBILLED_SALES
B = TransactionType.BILLED_SALES
CH = BillingType.CHARGEABLE
NC = BillingType.NON_CHARGEABLE
COMP = BillingType.COMPLIMENTARY
UNBILLED = BillingStatus.UNBILLED_SALES_CREATED
INV_CREATED = BillingStatus.CUSTOMER_INVOICE_CREATED
INV_POSTED = BillingStatus.CUSTOMER_INVOICE_POSTED
NONE = AdjustmentStatus.NONE
ADJUSTED = AdjustmentStatus.ADJUSTED
UNADJ = AdjustmentStatus.UNADJUSTABLE

WORK_DAY = date(2025, 3, 3)
INVOICE_DAY = date(2025, 3, 31)
CONFIRM_DAY = date(2025, 4, 1)
PROJECT = UUID(int=0xA1)
CONTRACT = Contract(
    contract_id=UUID(int=0xC0), customer_id=UUID(int=0xCC), currency="EUR", legal_entity="DEMF"
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
    """A fake repository: the records as the API layer would hold them, changes applied."""

    def __init__(self) -> None:
        self.new_id = Ids()
        self.actuals: dict[UUID, MsdynActual] = {}
        self.milestones: dict[UUID, Milestone] = {}

    def apply(self, changes: Changes) -> None:
        for a in (*changes.updated_actuals, *changes.new_actuals):
            self.actuals[a.actual_id] = a
        for m in changes.updated_milestones:
            self.milestones[m.milestone_id] = m

    def approve(self, hours: str = "8", billable: str | None = None, ready: bool = True) -> UUID:
        """Approve a time entry; returns the chargeable unbilled actual's id."""
        entry = ProjectEntry(
            entry_id=self.new_id(),
            transaction_class=TransactionClass.TIME,
            project_id=PROJECT,
            contract_line_id=TM_LINE.contract_line_id,
            quantity=D(hours),
            billable_quantity=D(billable if billable is not None else hours),
            cost_rate=D("100"),
            bill_rate=D("200"),
            document_date=WORK_DAY,
            resource="Ana",
            role="developer",
        )
        made = approve_entry(
            entry,
            contract=CONTRACT,
            contract_line=TM_LINE,
            accounting_date=WORK_DAY,
            new_id=self.new_id,
        )
        chargeable = next(a for a in made if a.transaction_type is U and a.billing_type is CH)
        if ready:
            chargeable = mark_ready_to_invoice(chargeable)
        self.apply(Changes(new_actuals=(*made, chargeable)))
        return chargeable.actual_id

    def add_milestone(
        self, status: MilestoneInvoiceStatus = MilestoneInvoiceStatus.READY
    ) -> Milestone:
        milestone = Milestone(
            milestone_id=MILESTONE_ID,
            contract_id=CONTRACT.contract_id,
            contract_line_id=FP_LINE.contract_line_id,
            project_id=PROJECT,
            amount=D("5000"),
            milestone_date=WORK_DAY,
            invoice_status=status,
            name="Design signed off",
        )
        self.milestones[milestone.milestone_id] = milestone
        return milestone

    def create_invoice(self) -> ProformaInvoice:
        change = create_proforma_invoice(
            CONTRACT,
            [TM_LINE, FP_LINE],
            self.actuals.values(),
            self.milestones.values(),
            invoice_date=INVOICE_DAY,
            new_id=self.new_id,
        )
        self.apply(change)
        return change.invoice


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


@pytest.fixture
def world() -> World:
    return World()


# ---- 4. creating a proforma invoice ---------------------------------------------------------


def test_proforma_picks_ready_chargeable_actuals_and_milestones(world: World) -> None:
    first = world.approve("8")
    second = world.approve("3")
    world.approve("4", ready=False)  # in the backlog but not ready
    world.approve("8", billable="6")  # its 2 h non-chargeable part is never picked
    world.add_milestone()

    invoice = world.create_invoice()

    assert invoice.status is InvoiceStatus.DRAFT
    assert (invoice.currency, invoice.legal_entity) == ("EUR", "DEMF")
    assert invoice.customer_id == CONTRACT.customer_id
    assert invoice.invoice_date == INVOICE_DAY
    assert not invoice.is_corrective and invoice.corrects_invoice_id is None
    tm, fp = invoice.lines
    assert tm.contract_line_id == TM_LINE.contract_line_id
    assert [(d.quantity, d.unit_price, d.amount) for d in tm.details] == [
        (D("8"), D("200"), D("1600")),
        (D("3"), D("200"), D("600")),
        (D("6"), D("200"), D("1200")),
    ]
    assert [d.actual_id for d in tm.details][:2] == [first, second]
    assert tm.amount == D("3400")
    assert fp.contract_line_id == FP_LINE.contract_line_id
    (milestone_detail,) = fp.details
    assert milestone_detail.milestone_id == MILESTONE_ID
    assert milestone_detail.transaction_class is TransactionClass.MILESTONE
    assert (milestone_detail.quantity, milestone_detail.amount) == (D("1"), D("5000"))
    assert invoice.total_amount_excluding_tax == D("8400")
    assert invoice.total_amount == D("8400")


def test_proforma_claims_what_it_picked_so_no_second_invoice_takes_it(world: World) -> None:
    picked = world.approve("8")
    not_ready = world.approve("4", ready=False)
    world.add_milestone()

    world.create_invoice()

    assert world.actuals[picked].billing_status is INV_CREATED
    assert world.actuals[picked].adjustment_status is NONE
    assert world.actuals[picked].invoice_id is None  # only billing status of an actual may change
    assert world.actuals[not_ready].billing_status is UNBILLED
    assert world.milestones[MILESTONE_ID].invoice_status is (
        MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED
    )
    with pytest.raises(NothingToInvoiceError, match=str(CONTRACT.contract_id)):
        world.create_invoice()


def test_proforma_has_one_line_per_contract_line_with_something(world: World) -> None:
    world.approve("8")
    world.add_milestone(MilestoneInvoiceStatus.NOT_READY)

    invoice = world.create_invoice()

    assert [line.contract_line_id for line in invoice.lines] == [TM_LINE.contract_line_id]


def test_adjusted_actuals_are_never_invoiced_even_if_flagged_ready(world: World) -> None:
    picked = world.approve("8")
    entry_id = world.actuals[picked].entry_id
    assert entry_id is not None
    cancelled = cancel_approval(
        entry_id,
        world.actuals.values(),
        accounting_date=WORK_DAY,
        new_id=world.new_id,
    )
    world.apply(cancelled)
    # Even a stale ready flag must not let them through.
    for a in (*cancelled.updated_actuals, *cancelled.new_actuals):
        world.actuals[a.actual_id] = replace(a, ready_to_invoice=True)

    with pytest.raises(NothingToInvoiceError):
        world.create_invoice()


# ---- 5. editing a draft ---------------------------------------------------------------------


def test_editing_quantity_and_billing_type_recomputes_totals(world: World) -> None:
    world.approve("8")
    world.approve("3")
    world.add_milestone()
    invoice = world.create_invoice()
    eight, three = invoice.lines[0].details

    invoice = edit_detail(invoice, eight.detail_id, quantity=D("6"))
    assert invoice.lines[0].amount == D("1800")
    assert invoice.total_amount == D("6800")

    invoice = edit_detail(invoice, three.detail_id, billing_type=COMP)
    assert invoice.lines[0].amount == D("1200")
    invoice = edit_detail(invoice, three.detail_id, billing_type=NC)
    assert invoice.lines[0].amount == D("1200")
    invoice = edit_detail(invoice, three.detail_id, billing_type=CH)
    assert invoice.lines[0].amount == D("1800")

    invoice = set_tax(invoice, D("342"))
    assert invoice.total_amount_excluding_tax == D("6800")
    assert invoice.total_amount == D("7142")


def test_editing_works_in_review_and_review_can_go_back_to_draft(world: World) -> None:
    world.approve("8")
    invoice = submit_for_review(world.create_invoice())
    assert invoice.status is InvoiceStatus.IN_REVIEW

    detail = invoice.details[0]
    invoice = edit_detail(invoice, detail.detail_id, quantity=D("10"))
    assert invoice.total_amount == D("2000")
    assert return_to_draft(invoice).status is InvoiceStatus.DRAFT
    with pytest.raises(InvalidTransitionError):
        submit_for_review(invoice)
    with pytest.raises(InvalidTransitionError):
        return_to_draft(return_to_draft(invoice))


def test_negative_quantity_and_partial_milestone_are_refused(world: World) -> None:
    world.approve("8")
    world.add_milestone()
    invoice = world.create_invoice()
    time_detail, milestone_detail = invoice.details

    with pytest.raises(InvalidEditError, match=str(time_detail.detail_id)):
        edit_detail(invoice, time_detail.detail_id, quantity=D("-1"))
    with pytest.raises(InvalidEditError, match="milestones"):
        edit_detail(invoice, milestone_detail.detail_id, quantity=D("0.5"))


def test_deleting_a_detail_puts_it_back_in_the_backlog(world: World) -> None:
    eight = world.approve("8")
    world.approve("3")
    world.add_milestone()
    invoice = world.create_invoice()
    eight_detail, three_detail = invoice.lines[0].details
    milestone_detail = invoice.lines[1].details[0]

    change = delete_detail(invoice, eight_detail.detail_id, world.actuals, world.milestones)
    world.apply(change)
    assert change.invoice.lines[0].details == (three_detail,)
    assert change.invoice.total_amount == D("5600")
    assert world.actuals[eight].billing_status is UNBILLED
    assert world.actuals[eight].ready_to_invoice

    change = delete_detail(
        change.invoice, milestone_detail.detail_id, world.actuals, world.milestones
    )
    world.apply(change)
    assert [line.contract_line_id for line in change.invoice.lines] == [TM_LINE.contract_line_id]
    assert world.milestones[MILESTONE_ID].invoice_status is MilestoneInvoiceStatus.READY
    # Released items are invoiceable again.
    assert world.create_invoice().total_amount == D("6600")


def test_deleting_a_draft_releases_everything(world: World) -> None:
    eight = world.approve("8")
    world.add_milestone()
    invoice = world.create_invoice()

    world.apply(delete_invoice(invoice, world.actuals, world.milestones))

    assert world.actuals[eight].billing_status is UNBILLED
    assert world.milestones[MILESTONE_ID].invoice_status is MilestoneInvoiceStatus.READY


# ---- 6. confirmation ------------------------------------------------------------------------


def confirm(world: World, invoice: ProformaInvoice) -> tuple[list[MsdynActual], list[MsdynActual]]:
    result = confirm_invoice(
        invoice,
        world.actuals,
        world.milestones,
        accounting_date=CONFIRM_DAY,
        new_id=world.new_id,
    )
    world.apply(result)
    assert result.invoice.status is InvoiceStatus.CONFIRMED
    assert result.expected_billed_sales_count == sum(
        1 for a in result.new_actuals if a.transaction_type is B
    )
    for a in result.new_actuals:
        assert a.invoice_id == invoice.invoice_id
        assert a.accounting_date == CONFIRM_DAY
        assert a.currency == "EUR"
    return list(result.updated_actuals), list(result.new_actuals)


def test_confirm_quantity_unchanged(world: World) -> None:
    original_id = world.approve("8")
    invoice = world.create_invoice()

    updated, new = confirm(world, invoice)

    assert [row(a) for a in updated] == [(U, D("8"), D("1600"), CH, INV_POSTED, NONE, False)]
    assert updated[0].actual_id == original_id
    assert [row(a) for a in new] == [
        (U, D("-8"), D("-1600"), CH, INV_POSTED, UNADJ, True),
        (B, D("8"), D("1600"), CH, INV_CREATED, NONE, False),
    ]
    assert new[0].reverses_actual_id == original_id
    # Finance imports the billed row once this unbilled actual is posted (domain.md, step 8).
    assert new[1].unbilled_actual_id == original_id
    assert new[1].billing_method is BillingMethod.TIME_AND_MATERIAL


def test_confirm_quantity_lowered_8_to_6(world: World) -> None:
    original_id = world.approve("8")
    invoice = world.create_invoice()
    invoice = edit_detail(invoice, invoice.details[0].detail_id, quantity=D("6"))
    assert invoice.total_amount == D("1200")

    result = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    )

    assert [row(a) for a in result.updated_actuals] == [
        (U, D("8"), D("1600"), CH, INV_POSTED, ADJUSTED, False)
    ]
    new = list(result.new_actuals)
    assert [row(a) for a in new] == [
        (U, D("-8"), D("-1600"), CH, INV_POSTED, UNADJ, False),
        (U, D("6"), D("1200"), CH, INV_POSTED, NONE, False),
        (U, D("-6"), D("-1200"), CH, INV_POSTED, UNADJ, True),
        (B, D("6"), D("1200"), CH, INV_CREATED, NONE, False),
        (U, D("2"), D("400"), NC, INV_POSTED, NONE, False),
        (U, D("-2"), D("-400"), NC, INV_POSTED, UNADJ, True),
        (B, D("2"), D("400"), NC, INV_CREATED, NONE, False),
    ]
    assert new[0].reverses_actual_id == original_id
    assert new[2].reverses_actual_id == new[1].actual_id
    assert new[5].reverses_actual_id == new[4].actual_id
    assert new[3].unbilled_actual_id == new[1].actual_id
    assert new[6].unbilled_actual_id == new[4].actual_id
    assert result.expected_billed_sales_count == 2
    assert result.invoice.total_amount == D("1200")


def test_confirm_quantity_raised_8_to_10(world: World) -> None:
    original_id = world.approve("8")
    invoice = world.create_invoice()
    invoice = edit_detail(invoice, invoice.details[0].detail_id, quantity=D("10"))

    result = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    )

    assert [row(a) for a in result.updated_actuals] == [
        (U, D("8"), D("1600"), CH, INV_POSTED, ADJUSTED, False)
    ]
    new = list(result.new_actuals)
    assert [row(a) for a in new] == [
        (U, D("-8"), D("-1600"), CH, INV_POSTED, UNADJ, False),
        (U, D("10"), D("2000"), CH, INV_POSTED, NONE, False),
        (U, D("-10"), D("-2000"), CH, INV_POSTED, UNADJ, True),
        (B, D("10"), D("2000"), CH, INV_CREATED, NONE, False),
    ]
    assert new[0].reverses_actual_id == original_id
    assert new[2].reverses_actual_id == new[1].actual_id
    assert new[3].unbilled_actual_id == new[1].actual_id
    assert result.expected_billed_sales_count == 1
    assert result.invoice.total_amount == D("2000")


def test_confirm_billing_type_changed_to_complimentary(world: World) -> None:
    world.approve("8")
    invoice = world.create_invoice()
    invoice = edit_detail(invoice, invoice.details[0].detail_id, billing_type=COMP)

    updated, new = confirm(world, invoice)

    assert [row(a) for a in updated] == [(U, D("8"), D("1600"), CH, INV_POSTED, ADJUSTED, False)]
    assert [row(a) for a in new] == [
        (U, D("-8"), D("-1600"), CH, INV_POSTED, UNADJ, False),
        (U, D("8"), D("1600"), COMP, INV_POSTED, NONE, False),
        (U, D("-8"), D("-1600"), COMP, INV_POSTED, UNADJ, True),
        (B, D("8"), D("1600"), COMP, INV_CREATED, NONE, False),
    ]


def test_confirm_milestone(world: World) -> None:
    world.add_milestone()
    invoice = world.create_invoice()

    result = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    )

    assert result.updated_actuals == ()
    (billed,) = result.new_actuals
    assert row(billed) == (B, D("1"), D("5000"), CH, INV_CREATED, NONE, False)
    assert billed.transaction_class is TransactionClass.MILESTONE
    assert billed.milestone_id == MILESTONE_ID
    assert billed.invoice_id == invoice.invoice_id
    assert billed.contract_line_id == FP_LINE.contract_line_id
    assert billed.billing_method is BillingMethod.FIXED_PRICE
    assert billed.unbilled_actual_id is None
    (milestone,) = result.updated_milestones
    assert milestone.invoice_status is MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED
    assert result.expected_billed_sales_count == 1


def test_confirm_mixed_invoice_counts_every_billed_sales_actual(world: World) -> None:
    world.approve("8")
    world.approve("8")
    world.add_milestone()
    invoice = world.create_invoice()
    invoice = edit_detail(invoice, invoice.details[1].detail_id, quantity=D("6"))
    invoice = set_tax(invoice, D("1292"))

    result = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    )

    # unchanged: 1, lowered: chargeable + non-chargeable, milestone: 1
    assert result.expected_billed_sales_count == 4
    assert result.invoice.total_amount_excluding_tax == D("7800")
    assert result.invoice.total_amount == D("9092")


def test_confirmed_invoice_refuses_every_edit_and_delete(world: World) -> None:
    world.approve("8")
    invoice = world.create_invoice()
    detail_id = invoice.details[0].detail_id
    confirmed = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    ).invoice
    world_before = dict(world.actuals)

    attempts: list[Callable[[], object]] = [
        lambda: edit_detail(confirmed, detail_id, quantity=D("1")),
        lambda: edit_detail(confirmed, detail_id, billing_type=NC),
        lambda: delete_detail(confirmed, detail_id, world.actuals, world.milestones),
        lambda: delete_invoice(confirmed, world.actuals, world.milestones),
        lambda: set_tax(confirmed, D("1")),
        lambda: submit_for_review(confirmed),
        lambda: return_to_draft(confirmed),
        lambda: confirm_invoice(
            confirmed,
            world.actuals,
            world.milestones,
            accounting_date=CONFIRM_DAY,
            new_id=world.new_id,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(InvoiceConfirmedError, match="confirmed invoice is final") as err:
            attempt()
        assert str(confirmed.invoice_id) in str(err.value)
    assert world.actuals == world_before


def test_confirm_refuses_an_actual_adjusted_behind_the_drafts_back(world: World) -> None:
    picked = world.approve("8")
    invoice = world.create_invoice()
    world.actuals[picked] = replace(
        world.actuals[picked], adjustment_status=AdjustmentStatus.ADJUSTED
    )

    with pytest.raises(ActualNotInvoiceableError, match=str(picked)):
        confirm_invoice(
            invoice,
            world.actuals,
            world.milestones,
            accounting_date=CONFIRM_DAY,
            new_id=world.new_id,
        )


def test_a_confirmation_is_one_source_transaction_of_its_header_and_billed_lines(
    world: World,
) -> None:
    """Dual-write's limits count a transaction's synced rows (docs/bridge.md, "Microsoft's
    limits"): the header and every billed line, not the skip-sync reversals; every message of
    the confirmation names the same transaction."""
    for _ in range(3):
        world.approve("8")
    world.add_milestone()
    invoice = world.create_invoice()
    result = confirm_invoice(
        invoice, world.actuals, world.milestones, accounting_date=CONFIRM_DAY, new_id=world.new_id
    )
    skip_sync = [a for a in result.new_actuals if a.skip_sync]
    assert len(skip_sync) == 3  # the unbilled reversals: not synced, not counted

    transaction = events.source_transaction(
        result.new_actuals, header_legal_entities=[invoice.legal_entity]
    )

    assert transaction.records == 1 + result.expected_billed_sales_count == 5
    assert transaction.legal_entities == 1
    rows = events.actuals_created_rows(
        Settings(), result.new_actuals, invoice_id=invoice.invoice_id, transaction=transaction
    )
    assert {row[2].payload.transaction for row in rows} == {transaction}
