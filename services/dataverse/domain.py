"""Business rules of the Dataverse (project) side: actuals, billing backlog, proforma invoices.

Pure code: no database, broker, HTTP or clock. Dates and new ids are passed in, every function
returns new records (the dataclasses are frozen) so the caller decides what to persist, in one
transaction.

The rules are those of the shared ``domain.md`` (Project Operations integrated with ERP):

* approving an entry makes a cost actual and unbilled-sales actuals;
* an actual is append-only: a change is a reversal (same quantity and amount negated,
  *unadjustable*, the original *adjusted*) plus new actuals;
* the PM marks chargeable unbilled sales *ready to invoice*; a proforma invoice bills them;
* confirming an invoice creates the billing actuals of domain.md's table;
* a confirmed invoice is final and is changed only by a corrective invoice.

Billing status over the life of an unbilled-sales actual (our reading of Project Operations):

* ``unbilled_sales_created`` while in the backlog;
* ``customer_invoice_created`` while a draft invoice holds it. This is how the draft claims it: the
  line detail points at the actual, and only the billing status of an actual may change
  (domain.md), so ``invoice_id`` of the unbilled actual stays as it was. Deleting the detail or
  the draft puts it back to ``unbilled_sales_created``;
* ``customer_invoice_posted`` once the invoice that billed it is confirmed (domain.md's table).

Cost actuals have no billing status (``None``): they are never invoiced. Billed-sales actuals
start at ``customer_invoice_created`` and become ``customer_invoice_posted`` when Finance posts
the customer invoice (see :func:`record_finance_posting`).

Skip sync: an actual with ``skip_sync`` is not sent to Finance. Finance must receive what lets it
reconcile the unbilled sales it already holds, and nothing it would count twice:

* cancelling an approval: every reversal syncs (Finance must take back the cost and the accrual);
* confirming, quantity and billing type unchanged: the unbilled reversal skips sync (domain.md);
  Finance marks the original invoiced when it imports the billed-sales actual;
* confirming, quantity or billing type changed: the *original's* reversal syncs, because Finance
  holds the original and must reverse it; the *new* unbilled actuals sync, because Finance needs
  them posted before it imports the billed sales behind them (domain.md, step 8); the *new*
  unbilled actuals' reversals skip sync, exactly like the unchanged case: Finance marks them
  invoiced when their billed sales arrive;
* correcting: the billed-sales reversal syncs (it is a line of the negative proposal), the new
  billed sales and its unbilled actual sync, the unbilled actual's reversal skips sync (same
  reasoning as above), the quantity put back into the backlog syncs (Finance accrues it again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID

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
from services.common.errors import RuleError

NewId = Callable[[], UUID]

_CENT = Decimal("0.01")
_ZERO = Decimal("0")
_ONE = Decimal("1")


def money(value: Decimal) -> Decimal:
    """Round an amount to cents, half up, as Dataverse currency fields do."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DataverseRuleError(RuleError):
    """A Dataverse business rule refused the operation; nothing changed.

    The message names the rule and the record, so an API layer can show it as is (HTTP 409).
    """


class InvoiceConfirmedError(DataverseRuleError):
    """Edit, delete or confirmation of an invoice that is already confirmed."""


class ActualNotInvoiceableError(DataverseRuleError):
    """The actual (or milestone) cannot be put in the backlog or on an invoice."""


class InvalidTransitionError(DataverseRuleError):
    """A status change that the state machine does not allow."""


class CorrectionAlreadyOpenError(InvalidTransitionError):
    """A confirmed invoice already has a corrective draft that is not confirmed yet: the PM
    corrects on that draft (rule decided in docs/dataverse.md, "Rules decided")."""


class InvalidEditError(DataverseRuleError):
    """A value an edit may not take (negative quantity, partial milestone credit, ...)."""


class NothingToInvoiceError(DataverseRuleError):
    """A proforma invoice was asked for a contract with nothing ready to invoice."""


class RecordMismatchError(DataverseRuleError):
    """Records passed together do not belong together (missing, other contract, ...)."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MsdynActual:
    """One ``msdyn_actual``: append-only except billing/adjustment status and accounting detail.

    ``billing_status`` is ``None`` for cost actuals (never invoiced). ``entry_id`` is the
    transaction origin (the approved entry), so that cancelling an approval finds its actuals.
    ``ready_to_invoice`` is the billing backlog flag, meaningful for unbilled sales only.
    ``billing_method`` is the contract line's. ``unbilled_actual_id``, on a time-and-material
    billed-sales actual, is the unbilled-sales actual it bills: Finance imports the billed row
    only once that one is posted through the integration journal (domain.md, step 8).
    """

    actual_id: UUID
    transaction_type: TransactionType
    transaction_class: TransactionClass
    billing_type: BillingType
    billing_status: BillingStatus | None
    adjustment_status: AdjustmentStatus
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str
    document_date: date
    accounting_date: date
    legal_entity: str
    project_id: UUID
    contract_id: UUID | None
    contract_line_id: UUID | None
    customer_id: UUID | None
    resource: str | None = None
    role: str | None = None
    invoice_id: UUID | None = None
    skip_sync: bool = False
    reverses_actual_id: UUID | None = None
    ready_to_invoice: bool = False
    milestone_id: UUID | None = None
    entry_id: UUID | None = None
    billing_method: BillingMethod | None = None
    unbilled_actual_id: UUID | None = None
    voucher: str | None = None
    voucher_date: date | None = None
    exchange_rate: Decimal | None = None
    accounting_currency_amount: Decimal | None = None
    tax_amount: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class Contract:
    """A project contract: who pays, in which currency, billed by which legal entity."""

    contract_id: UUID
    customer_id: UUID
    currency: str
    legal_entity: str
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class ContractLine:
    """A project contract line: one project, one billing method, its price list.

    Rates are per role with a default for roles not listed (the simplest real price list).
    """

    contract_line_id: UUID
    contract_id: UUID
    project_id: UUID
    billing_method: BillingMethod
    name: str = ""
    default_bill_rate: Decimal = _ZERO
    default_cost_rate: Decimal = _ZERO
    bill_rates: Mapping[str, Decimal] = field(default_factory=dict)
    cost_rates: Mapping[str, Decimal] = field(default_factory=dict)

    def bill_rate_for(self, role: str | None) -> Decimal:
        """Bill rate of a role on this line, the default when the role has none."""
        if role is None:
            return self.default_bill_rate
        return self.bill_rates.get(role, self.default_bill_rate)

    def cost_rate_for(self, role: str | None) -> Decimal:
        """Cost rate of a role on this line, the default when the role has none."""
        if role is None:
            return self.default_cost_rate
        return self.cost_rates.get(role, self.default_cost_rate)


@dataclass(frozen=True, kw_only=True)
class Milestone:
    """A fixed-price billing milestone of a contract line."""

    milestone_id: UUID
    contract_id: UUID
    contract_line_id: UUID
    project_id: UUID
    amount: Decimal
    milestone_date: date
    invoice_status: MilestoneInvoiceStatus = MilestoneInvoiceStatus.NOT_READY
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class ProjectEntry:
    """A time, expense or material entry submitted for approval.

    ``billable_quantity`` is what the approver lets the customer be billed for: it may be cut
    below or raised above ``quantity`` (the quantity worked or used, which drives cost).
    """

    entry_id: UUID
    transaction_class: TransactionClass
    project_id: UUID
    contract_line_id: UUID
    quantity: Decimal
    billable_quantity: Decimal
    cost_rate: Decimal
    bill_rate: Decimal
    document_date: date
    resource: str | None = None
    role: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class InvoiceLineDetail:
    """One line detail: bills one unbilled actual or one milestone.

    On a corrective invoice, ``original_quantity`` is the quantity the corrected invoice billed
    and ``billed_actual_id`` the billed-sales actual it billed; ``quantity`` is what is still to
    bill, so the detail's amount is the difference.
    """

    detail_id: UUID
    transaction_class: TransactionClass
    quantity: Decimal
    unit_price: Decimal
    billing_type: BillingType
    actual_id: UUID | None = None
    milestone_id: UUID | None = None
    original_quantity: Decimal | None = None
    billed_actual_id: UUID | None = None
    resource: str | None = None
    role: str | None = None

    @property
    def amount(self) -> Decimal:
        """Quantity times unit price; on a corrective detail, the change from the original."""
        billed = money(self.quantity * self.unit_price)
        if self.original_quantity is None:
            return billed
        return billed - money(self.original_quantity * self.unit_price)

    @property
    def chargeable_amount(self) -> Decimal:
        """What the detail adds to the invoice: its amount if chargeable, else nothing."""
        return self.amount if self.billing_type is BillingType.CHARGEABLE else _ZERO


@dataclass(frozen=True, kw_only=True)
class InvoiceLine:
    """One invoice line per contract line; its amount is the sum of chargeable details."""

    line_id: UUID
    contract_line_id: UUID
    details: tuple[InvoiceLineDetail, ...]

    @property
    def amount(self) -> Decimal:
        """Sum of the chargeable details' amounts."""
        return sum((d.chargeable_amount for d in self.details), _ZERO)


@dataclass(frozen=True, kw_only=True)
class ProformaInvoice:
    """A proforma (project) invoice; confirmed is final."""

    invoice_id: UUID
    contract_id: UUID
    customer_id: UUID
    currency: str
    legal_entity: str
    invoice_date: date
    lines: tuple[InvoiceLine, ...]
    status: InvoiceStatus = InvoiceStatus.DRAFT
    tax_amount: Decimal = _ZERO
    is_corrective: bool = False
    corrects_invoice_id: UUID | None = None

    @property
    def total_amount_excluding_tax(self) -> Decimal:
        """Sum of the lines."""
        return sum((line.amount for line in self.lines), _ZERO)

    @property
    def total_amount(self) -> Decimal:
        """Sum of the lines plus tax (domain.md, rule 4)."""
        return self.total_amount_excluding_tax + self.tax_amount

    @property
    def details(self) -> tuple[InvoiceLineDetail, ...]:
        """Every line detail, in line order."""
        return tuple(d for line in self.lines for d in line.details)

    def detail(self, detail_id: UUID) -> InvoiceLineDetail:
        """The line detail with this id; ``RecordMismatchError`` when there is none."""
        for d in self.details:
            if d.detail_id == detail_id:
                return d
        raise RecordMismatchError(
            f"invoice line detail {detail_id} is not on invoice {self.invoice_id}"
        )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Changes:
    """What an operation did to existing actuals and milestones, and what it created."""

    updated_actuals: tuple[MsdynActual, ...] = ()
    new_actuals: tuple[MsdynActual, ...] = ()
    updated_milestones: tuple[Milestone, ...] = ()


@dataclass(frozen=True, kw_only=True)
class InvoiceChange(Changes):
    """The invoice after the operation, with the records it changed or created."""

    invoice: ProformaInvoice


@dataclass(frozen=True, kw_only=True)
class ConfirmResult(InvoiceChange):
    """A confirmation: the confirmed invoice, the billing actuals, and what Finance must expect.

    ``expected_billed_sales_count`` is the number of billed-sales actuals this confirmation
    created (chargeable and non-chargeable, reversals of billed sales included): the import from
    staging makes the proposal lines only once that many are staged.
    """

    expected_billed_sales_count: int


@dataclass(frozen=True, kw_only=True)
class AccountingDetail:
    """Accounting detail that Finance writes back on an actual when it posts."""

    voucher: str
    voucher_date: date
    exchange_rate: Decimal
    accounting_currency_amount: Decimal
    tax_amount: Decimal | None = None


# --------------------------------------------------------------------------------------------
# Building blocks for actuals
# --------------------------------------------------------------------------------------------


def _reversal(
    original: MsdynActual,
    *,
    new_id: NewId,
    accounting_date: date,
    skip_sync: bool,
    invoice_id: UUID | None = None,
) -> MsdynActual:
    """Same quantity and amount negated, unadjustable, pointing at what it reverses.

    The reversal copies the billing status the original has *after* the operation, so an
    original and its reversal always tell the same story.
    """
    return replace(
        original,
        actual_id=new_id(),
        quantity=-original.quantity,
        amount=-original.amount,
        adjustment_status=AdjustmentStatus.UNADJUSTABLE,
        reverses_actual_id=original.actual_id,
        accounting_date=accounting_date,
        skip_sync=skip_sync,
        ready_to_invoice=False,
        invoice_id=invoice_id if invoice_id is not None else original.invoice_id,
        voucher=None,
        voucher_date=None,
        exchange_rate=None,
        accounting_currency_amount=None,
        tax_amount=None,
    )


def _adjusted(original: MsdynActual) -> MsdynActual:
    return replace(original, adjustment_status=AdjustmentStatus.ADJUSTED, ready_to_invoice=False)


def _derived(
    source: MsdynActual,
    *,
    new_id: NewId,
    transaction_type: TransactionType,
    billing_type: BillingType,
    billing_status: BillingStatus,
    quantity: Decimal,
    accounting_date: date,
    invoice_id: UUID | None,
    skip_sync: bool = False,
    unbilled_actual_id: UUID | None = None,
) -> MsdynActual:
    """A fresh actual for the same work as ``source`` (same unit price, dates, resource)."""
    return replace(
        source,
        actual_id=new_id(),
        transaction_type=transaction_type,
        billing_type=billing_type,
        billing_status=billing_status,
        adjustment_status=AdjustmentStatus.NONE,
        quantity=quantity,
        amount=money(quantity * source.unit_price),
        accounting_date=accounting_date,
        invoice_id=invoice_id,
        skip_sync=skip_sync,
        reverses_actual_id=None,
        unbilled_actual_id=unbilled_actual_id,
        ready_to_invoice=False,
        voucher=None,
        voucher_date=None,
        exchange_rate=None,
        accounting_currency_amount=None,
        tax_amount=None,
    )


def _require_open(invoice: ProformaInvoice, action: str) -> None:
    if invoice.status is InvoiceStatus.CONFIRMED:
        raise InvoiceConfirmedError(
            f"confirmed invoice is final, cannot {action}: invoice {invoice.invoice_id}"
        )


def _lookup_actual(actuals: Mapping[UUID, MsdynActual], actual_id: UUID) -> MsdynActual:
    try:
        return actuals[actual_id]
    except KeyError:
        raise RecordMismatchError(f"actual {actual_id} was not supplied") from None


def _lookup_milestone(milestones: Mapping[UUID, Milestone], milestone_id: UUID) -> Milestone:
    try:
        return milestones[milestone_id]
    except KeyError:
        raise RecordMismatchError(f"milestone {milestone_id} was not supplied") from None


# --------------------------------------------------------------------------------------------
# 1-2. Approvals
# --------------------------------------------------------------------------------------------


def approve_entry(
    entry: ProjectEntry,
    *,
    contract: Contract,
    contract_line: ContractLine,
    accounting_date: date,
    new_id: NewId,
) -> tuple[MsdynActual, ...]:
    """Approve a time, expense or material entry: a cost actual plus unbilled-sales actuals.

    Cost is the quantity worked at the cost rate. On a time-and-material line the unbilled side
    is the billable quantity at the bill rate, chargeable; if the approver cut the billable
    quantity, the rest is a second, non-chargeable unbilled actual (8 h worked, 6 billable:
    6 h chargeable + 2 h non-chargeable). A raised billable quantity bills more than was worked
    (8 h worked, 10 billable: 10 h chargeable) while the cost stays at the hours worked.
    A fixed-price line is billed by its milestones, so its entries make cost only.
    """
    if entry.transaction_class not in (
        TransactionClass.TIME,
        TransactionClass.EXPENSE,
        TransactionClass.MATERIAL,
    ):
        raise InvalidEditError(
            f"only time, expense and material entries are approved, not "
            f"{entry.transaction_class}: entry {entry.entry_id}"
        )
    if contract_line.contract_line_id != entry.contract_line_id or (
        contract_line.contract_id != contract.contract_id
    ):
        raise RecordMismatchError(
            f"entry {entry.entry_id} is not on contract line {contract_line.contract_line_id} "
            f"of contract {contract.contract_id}"
        )
    if contract_line.project_id != entry.project_id:
        raise RecordMismatchError(
            f"entry {entry.entry_id} is for project {entry.project_id}, contract line "
            f"{contract_line.contract_line_id} for project {contract_line.project_id}"
        )
    if entry.quantity < 0 or entry.billable_quantity < 0:
        raise InvalidEditError(f"quantities of an entry cannot be negative: entry {entry.entry_id}")

    def actual(
        transaction_type: TransactionType,
        billing_type: BillingType,
        billing_status: BillingStatus | None,
        quantity: Decimal,
        unit_price: Decimal,
    ) -> MsdynActual:
        return MsdynActual(
            actual_id=new_id(),
            transaction_type=transaction_type,
            transaction_class=entry.transaction_class,
            billing_type=billing_type,
            billing_status=billing_status,
            adjustment_status=AdjustmentStatus.NONE,
            quantity=quantity,
            unit_price=unit_price,
            amount=money(quantity * unit_price),
            currency=contract.currency,
            document_date=entry.document_date,
            accounting_date=accounting_date,
            legal_entity=contract.legal_entity,
            project_id=entry.project_id,
            contract_id=contract.contract_id,
            contract_line_id=contract_line.contract_line_id,
            customer_id=contract.customer_id,
            resource=entry.resource,
            role=entry.role,
            entry_id=entry.entry_id,
            billing_method=contract_line.billing_method,
        )

    time_and_material = contract_line.billing_method is BillingMethod.TIME_AND_MATERIAL
    # The cost actual carries the billing type of the work: non-chargeable only when nothing of
    # it may be billed.
    cost_type = (
        BillingType.CHARGEABLE
        if entry.billable_quantity > 0 or not time_and_material
        else BillingType.NON_CHARGEABLE
    )
    result = [actual(TransactionType.COST, cost_type, None, entry.quantity, entry.cost_rate)]
    if not time_and_material:
        return tuple(result)
    unbilled = BillingStatus.UNBILLED_SALES_CREATED
    if entry.billable_quantity > 0:
        result.append(
            actual(
                TransactionType.UNBILLED_SALES,
                BillingType.CHARGEABLE,
                unbilled,
                entry.billable_quantity,
                entry.bill_rate,
            )
        )
    if entry.billable_quantity < entry.quantity:
        result.append(
            actual(
                TransactionType.UNBILLED_SALES,
                BillingType.NON_CHARGEABLE,
                unbilled,
                entry.quantity - entry.billable_quantity,
                entry.bill_rate,
            )
        )
    return tuple(result)


def cancel_approval(
    entry_id: UUID,
    actuals: Iterable[MsdynActual],
    *,
    accounting_date: date,
    new_id: NewId,
) -> Changes:
    """Cancel an approval: every live actual of the entry is adjusted and reversed.

    ``actuals`` may hold anything; only this entry's actuals with adjustment status *none* are
    reversed (reversals are *unadjustable* and a previous cancel left originals *adjusted*).
    Unbilled sales of the entry become *canceled* (original and reversal). Every reversal syncs:
    Finance holds the cost and the accrual and must take them back. Refused once any unbilled
    sales of the entry is on an invoice: the invoice must be dealt with first.
    """
    live = [
        a
        for a in actuals
        if a.entry_id == entry_id and a.adjustment_status is AdjustmentStatus.NONE
    ]
    if not live:
        raise InvalidTransitionError(
            f"approval has no actuals left to cancel (already cancelled?): entry {entry_id}"
        )
    for a in live:
        if a.transaction_type is TransactionType.BILLED_SALES or (
            a.transaction_type is TransactionType.UNBILLED_SALES
            and a.billing_status is not BillingStatus.UNBILLED_SALES_CREATED
        ):
            raise InvalidTransitionError(
                f"approval cannot be cancelled once invoiced (billing status "
                f"{a.billing_status}): entry {entry_id}, actual {a.actual_id}"
            )
    updated: list[MsdynActual] = []
    new: list[MsdynActual] = []
    for a in live:
        original = _adjusted(a)
        if a.transaction_type is TransactionType.UNBILLED_SALES:
            original = replace(original, billing_status=BillingStatus.CANCELED)
        updated.append(original)
        new.append(
            _reversal(original, new_id=new_id, accounting_date=accounting_date, skip_sync=False)
        )
    return Changes(updated_actuals=tuple(updated), new_actuals=tuple(new))


# --------------------------------------------------------------------------------------------
# 3. Billing backlog
# --------------------------------------------------------------------------------------------


def _require_invoiceable(actual: MsdynActual, action: str) -> None:
    """An actual the backlog may hold: live, chargeable, unbilled, not on any invoice."""
    if actual.transaction_type is not TransactionType.UNBILLED_SALES:
        raise ActualNotInvoiceableError(
            f"only unbilled sales can {action}, not {actual.transaction_type}: "
            f"actual {actual.actual_id}"
        )
    if actual.adjustment_status is not AdjustmentStatus.NONE:
        raise ActualNotInvoiceableError(
            f"adjusted or unadjustable actuals can never be invoiced (adjustment status "
            f"{actual.adjustment_status}), cannot {action}: actual {actual.actual_id}"
        )
    if actual.billing_type is not BillingType.CHARGEABLE:
        raise ActualNotInvoiceableError(
            f"only chargeable unbilled sales can {action} (billing type "
            f"{actual.billing_type}): actual {actual.actual_id}"
        )
    if actual.billing_status is not BillingStatus.UNBILLED_SALES_CREATED or (
        actual.invoice_id is not None
    ):
        raise ActualNotInvoiceableError(
            f"actual is already on an invoice (billing status {actual.billing_status}), "
            f"cannot {action}: actual {actual.actual_id}"
        )


def mark_ready_to_invoice(actual: MsdynActual, ready: bool = True) -> MsdynActual:
    """Put a chargeable unbilled-sales actual in (or take it out of) the billing backlog.

    Adjusted and unadjustable actuals, non-chargeable ones, cost and billed sales, and actuals
    already on an invoice are refused with ``ActualNotInvoiceableError``.
    """
    _require_invoiceable(actual, "be marked ready to invoice" if ready else "be marked not ready")
    return replace(actual, ready_to_invoice=ready)


def mark_milestone_ready(milestone: Milestone, ready: bool = True) -> Milestone:
    """Move a milestone between *not ready* and *ready* to invoice."""
    if milestone.invoice_status not in (
        MilestoneInvoiceStatus.NOT_READY,
        MilestoneInvoiceStatus.READY,
    ):
        raise InvalidTransitionError(
            f"milestone is already invoiced (invoice status {milestone.invoice_status}): "
            f"milestone {milestone.milestone_id}"
        )
    status = MilestoneInvoiceStatus.READY if ready else MilestoneInvoiceStatus.NOT_READY
    return replace(milestone, invoice_status=status)


# --------------------------------------------------------------------------------------------
# 4. Proforma invoice
# --------------------------------------------------------------------------------------------


def _is_backlog_ready(actual: MsdynActual, contract_id: UUID) -> bool:
    return (
        actual.contract_id == contract_id
        and actual.transaction_type is TransactionType.UNBILLED_SALES
        and actual.billing_type is BillingType.CHARGEABLE
        and actual.adjustment_status is AdjustmentStatus.NONE
        and actual.billing_status is BillingStatus.UNBILLED_SALES_CREATED
        and actual.invoice_id is None
        and actual.ready_to_invoice
    )


def create_proforma_invoice(
    contract: Contract,
    contract_lines: Sequence[ContractLine],
    actuals: Iterable[MsdynActual],
    milestones: Iterable[Milestone],
    *,
    invoice_date: date,
    new_id: NewId,
) -> InvoiceChange:
    """Create a draft invoice from what is ready to invoice on a contract.

    Picks the contract's ready, chargeable, live unbilled-sales actuals that no invoice holds,
    and its ready milestones; anything else passed in is ignored. One invoice line per contract
    line that has something (in ``contract_lines`` order), one detail per actual or milestone.
    Currency, customer and legal entity come from the contract.

    The picked actuals' billing status becomes *customer invoice created* and the milestones'
    invoice status *customer invoice created*: the draft holds them, so no second invoice picks
    them, and they go back to the backlog if the detail or draft is deleted.
    """
    line_ids = {cl.contract_line_id for cl in contract_lines}
    for cl in contract_lines:
        if cl.contract_id != contract.contract_id:
            raise RecordMismatchError(
                f"contract line {cl.contract_line_id} is not on contract {contract.contract_id}"
            )
    picked = [a for a in actuals if _is_backlog_ready(a, contract.contract_id)]
    ready_milestones = [
        m
        for m in milestones
        if m.contract_id == contract.contract_id
        and m.invoice_status is MilestoneInvoiceStatus.READY
    ]
    for item_line in [a.contract_line_id for a in picked] + [
        m.contract_line_id for m in ready_milestones
    ]:
        if item_line not in line_ids:
            raise RecordMismatchError(
                f"contract line {item_line} of a ready item was not supplied for contract "
                f"{contract.contract_id}"
            )
    if not picked and not ready_milestones:
        raise NothingToInvoiceError(
            f"nothing is ready to invoice on contract {contract.contract_id}"
        )

    lines: list[InvoiceLine] = []
    for cl in contract_lines:
        details = [
            InvoiceLineDetail(
                detail_id=new_id(),
                transaction_class=a.transaction_class,
                quantity=a.quantity,
                unit_price=a.unit_price,
                billing_type=a.billing_type,
                actual_id=a.actual_id,
                resource=a.resource,
                role=a.role,
            )
            for a in picked
            if a.contract_line_id == cl.contract_line_id
        ] + [
            InvoiceLineDetail(
                detail_id=new_id(),
                transaction_class=TransactionClass.MILESTONE,
                quantity=_ONE,
                unit_price=m.amount,
                billing_type=BillingType.CHARGEABLE,
                milestone_id=m.milestone_id,
            )
            for m in ready_milestones
            if m.contract_line_id == cl.contract_line_id
        ]
        if details:
            lines.append(
                InvoiceLine(
                    line_id=new_id(),
                    contract_line_id=cl.contract_line_id,
                    details=tuple(details),
                )
            )
    invoice = ProformaInvoice(
        invoice_id=new_id(),
        contract_id=contract.contract_id,
        customer_id=contract.customer_id,
        currency=contract.currency,
        legal_entity=contract.legal_entity,
        invoice_date=invoice_date,
        lines=tuple(lines),
    )
    return InvoiceChange(
        invoice=invoice,
        updated_actuals=tuple(
            replace(a, billing_status=BillingStatus.CUSTOMER_INVOICE_CREATED) for a in picked
        ),
        updated_milestones=tuple(
            replace(m, invoice_status=MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED)
            for m in ready_milestones
        ),
    )


# --------------------------------------------------------------------------------------------
# 5. Editing a draft
# --------------------------------------------------------------------------------------------


def _replace_detail(invoice: ProformaInvoice, new: InvoiceLineDetail) -> ProformaInvoice:
    lines = tuple(
        replace(
            line,
            details=tuple(new if d.detail_id == new.detail_id else d for d in line.details),
        )
        for line in invoice.lines
    )
    return replace(invoice, lines=lines)


def edit_detail(
    invoice: ProformaInvoice,
    detail_id: UUID,
    *,
    quantity: Decimal | None = None,
    billing_type: BillingType | None = None,
) -> ProformaInvoice:
    """Change a draft detail's quantity and/or billing type; totals follow.

    Refused on a confirmed invoice. A quantity cannot be negative. A milestone is billed whole,
    so its detail's quantity stays 1; on a corrective invoice a milestone can only be credited
    in full (quantity 0) or left as billed, and a corrective detail keeps the billing type it was
    billed with (the credit must mirror the original).
    """
    _require_open(invoice, f"edit line detail {detail_id}")
    detail = invoice.detail(detail_id)
    new = detail
    if quantity is not None:
        if quantity < 0:
            raise InvalidEditError(
                f"a line detail quantity cannot be negative ({quantity}): detail {detail_id} "
                f"of invoice {invoice.invoice_id}"
            )
        if detail.milestone_id is not None:
            allowed = (
                {_ZERO, detail.original_quantity}
                if detail.original_quantity is not None
                else {_ONE}
            )
            if quantity not in allowed:
                raise InvalidEditError(
                    f"milestones are billed whole and can only be credited in full "
                    f"(quantity {quantity} refused): detail {detail_id} of invoice "
                    f"{invoice.invoice_id}"
                )
        new = replace(new, quantity=quantity)
    if billing_type is not None and billing_type is not detail.billing_type:
        if invoice.is_corrective:
            raise InvalidEditError(
                f"a corrective detail keeps the billing type it was billed with "
                f"({detail.billing_type}): detail {detail_id} of invoice {invoice.invoice_id}"
            )
        new = replace(new, billing_type=billing_type)
    return _replace_detail(invoice, new)


def _release(
    details: Iterable[InvoiceLineDetail],
    actuals: Mapping[UUID, MsdynActual],
    milestones: Mapping[UUID, Milestone],
) -> Changes:
    """Put what deleted details held back into the backlog (still ready to invoice)."""
    released_actuals: list[MsdynActual] = []
    released_milestones: list[Milestone] = []
    for d in details:
        if d.original_quantity is not None:
            continue  # a corrective detail holds nothing of the backlog
        if d.actual_id is not None:
            a = _lookup_actual(actuals, d.actual_id)
            released_actuals.append(replace(a, billing_status=BillingStatus.UNBILLED_SALES_CREATED))
        if d.milestone_id is not None:
            m = _lookup_milestone(milestones, d.milestone_id)
            released_milestones.append(replace(m, invoice_status=MilestoneInvoiceStatus.READY))
    return Changes(
        updated_actuals=tuple(released_actuals), updated_milestones=tuple(released_milestones)
    )


def delete_detail(
    invoice: ProformaInvoice,
    detail_id: UUID,
    actuals: Mapping[UUID, MsdynActual],
    milestones: Mapping[UUID, Milestone],
) -> InvoiceChange:
    """Delete a detail from a draft; its actual or milestone goes back to the backlog.

    A line left without details is removed. Refused on a confirmed invoice.
    """
    _require_open(invoice, f"delete line detail {detail_id}")
    detail = invoice.detail(detail_id)
    lines = []
    for line in invoice.lines:
        kept = tuple(d for d in line.details if d.detail_id != detail_id)
        if kept:
            lines.append(replace(line, details=kept))
    released = _release([detail], actuals, milestones)
    return InvoiceChange(
        invoice=replace(invoice, lines=tuple(lines)),
        updated_actuals=released.updated_actuals,
        updated_milestones=released.updated_milestones,
    )


def delete_invoice(
    invoice: ProformaInvoice,
    actuals: Mapping[UUID, MsdynActual],
    milestones: Mapping[UUID, Milestone],
) -> Changes:
    """Delete a draft invoice; everything it held goes back to the backlog.

    Refused on a confirmed invoice: confirmed is final.
    """
    _require_open(invoice, "delete it")
    return _release(invoice.details, actuals, milestones)


def set_tax(invoice: ProformaInvoice, tax_amount: Decimal) -> ProformaInvoice:
    """Set the header's tax; the total is lines plus tax. Refused on a confirmed invoice."""
    _require_open(invoice, "change its tax")
    return replace(invoice, tax_amount=money(tax_amount))


def submit_for_review(invoice: ProformaInvoice) -> ProformaInvoice:
    """Draft → in review."""
    _require_open(invoice, "submit it for review")
    if invoice.status is not InvoiceStatus.DRAFT:
        raise InvalidTransitionError(
            f"only a draft can be submitted for review (status {invoice.status}): "
            f"invoice {invoice.invoice_id}"
        )
    return replace(invoice, status=InvoiceStatus.IN_REVIEW)


def return_to_draft(invoice: ProformaInvoice) -> ProformaInvoice:
    """In review → draft."""
    _require_open(invoice, "return it to draft")
    if invoice.status is not InvoiceStatus.IN_REVIEW:
        raise InvalidTransitionError(
            f"only an invoice in review can return to draft (status {invoice.status}): "
            f"invoice {invoice.invoice_id}"
        )
    return replace(invoice, status=InvoiceStatus.DRAFT)


# --------------------------------------------------------------------------------------------
# 6. Confirmation
# --------------------------------------------------------------------------------------------


def confirm_invoice(
    invoice: ProformaInvoice,
    actuals: Mapping[UUID, MsdynActual],
    milestones: Mapping[UUID, Milestone],
    *,
    accounting_date: date,
    new_id: NewId,
) -> ConfirmResult:
    """Confirm a draft or in-review invoice and create its billing actuals.

    A corrective invoice follows the correction rules (see ``_confirm_corrective``). For an
    ordinary invoice, per detail (domain.md's table):

    * unchanged quantity and billing type: the unbilled original becomes *customer invoice
      posted*, a negated unbilled reversal with skip sync, one billed-sales actual alike;
    * changed (lowered, raised, or billing type changed): the original is *adjusted* with its
      unadjustable reversal (synced); new unbilled actuals, one for the invoiced quantity with
      the detail's billing type and, when lowered, a non-chargeable one for the rest; each has
      a reversal with skip sync and a billed-sales actual alike;
    * milestone: one billed-sales actual; the milestone stays *customer invoice created* until
      Finance posts.

    All actuals this creates carry the invoice id and the given accounting date. Unbilled
    actuals settled by the confirmation end *customer invoice posted*; billed-sales actuals
    start *customer invoice created*.
    """
    _require_open(invoice, "confirm it again")
    if invoice.is_corrective:
        return _confirm_corrective(
            invoice, actuals, milestones, accounting_date=accounting_date, new_id=new_id
        )

    updated: list[MsdynActual] = []
    new: list[MsdynActual] = []
    updated_milestones: list[Milestone] = []
    posted = BillingStatus.CUSTOMER_INVOICE_POSTED
    created = BillingStatus.CUSTOMER_INVOICE_CREATED

    for detail in invoice.details:
        if detail.milestone_id is not None:
            m = _lookup_milestone(milestones, detail.milestone_id)
            if m.invoice_status is not MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED:
                raise ActualNotInvoiceableError(
                    f"milestone is not held by a draft invoice (invoice status "
                    f"{m.invoice_status}): milestone {m.milestone_id}, invoice "
                    f"{invoice.invoice_id}"
                )
            new.append(_milestone_billed_sales(invoice, m, detail, accounting_date, new_id))
            updated_milestones.append(m)
            continue
        if detail.actual_id is None:
            raise RecordMismatchError(
                f"line detail bills neither an actual nor a milestone: detail "
                f"{detail.detail_id} of invoice {invoice.invoice_id}"
            )
        original = _lookup_actual(actuals, detail.actual_id)
        if (
            original.transaction_type is not TransactionType.UNBILLED_SALES
            or original.adjustment_status is not AdjustmentStatus.NONE
            or original.billing_status is not created
        ):
            raise ActualNotInvoiceableError(
                f"actual is not an unbilled sale held by this draft (adjustment status "
                f"{original.adjustment_status}, billing status {original.billing_status}): "
                f"actual {original.actual_id}, invoice {invoice.invoice_id}"
            )

        def billed_alike(unbilled: MsdynActual) -> MsdynActual:
            return _derived(
                unbilled,
                new_id=new_id,
                transaction_type=TransactionType.BILLED_SALES,
                billing_type=unbilled.billing_type,
                billing_status=created,
                quantity=unbilled.quantity,
                accounting_date=accounting_date,
                invoice_id=invoice.invoice_id,
                unbilled_actual_id=unbilled.actual_id,
            )

        unchanged = (
            detail.quantity == original.quantity and detail.billing_type is original.billing_type
        )
        if unchanged:
            settled = replace(original, billing_status=posted)
            updated.append(settled)
            new.append(
                _reversal(
                    settled,
                    new_id=new_id,
                    accounting_date=accounting_date,
                    skip_sync=True,
                    invoice_id=invoice.invoice_id,
                )
            )
            new.append(billed_alike(settled))
            continue

        adjusted = replace(_adjusted(original), billing_status=posted)
        updated.append(adjusted)
        new.append(
            _reversal(
                adjusted,
                new_id=new_id,
                accounting_date=accounting_date,
                skip_sync=False,
                invoice_id=invoice.invoice_id,
            )
        )
        parts: list[tuple[Decimal, BillingType]] = []
        if detail.quantity > 0:
            parts.append((detail.quantity, detail.billing_type))
        if detail.quantity < original.quantity:
            parts.append((original.quantity - detail.quantity, BillingType.NON_CHARGEABLE))
        for quantity, billing_type in parts:
            unbilled = _derived(
                original,
                new_id=new_id,
                transaction_type=TransactionType.UNBILLED_SALES,
                billing_type=billing_type,
                billing_status=posted,
                quantity=quantity,
                accounting_date=accounting_date,
                invoice_id=invoice.invoice_id,
            )
            new.append(unbilled)
            new.append(
                _reversal(unbilled, new_id=new_id, accounting_date=accounting_date, skip_sync=True)
            )
            new.append(billed_alike(unbilled))

    return ConfirmResult(
        invoice=replace(invoice, status=InvoiceStatus.CONFIRMED),
        updated_actuals=tuple(updated),
        new_actuals=tuple(new),
        updated_milestones=tuple(updated_milestones),
        expected_billed_sales_count=_billed_sales_count(new),
    )


def _billed_sales_count(actuals: Iterable[MsdynActual]) -> int:
    return sum(1 for a in actuals if a.transaction_type is TransactionType.BILLED_SALES)


def _milestone_billed_sales(
    invoice: ProformaInvoice,
    milestone: Milestone,
    detail: InvoiceLineDetail,
    accounting_date: date,
    new_id: NewId,
) -> MsdynActual:
    return MsdynActual(
        actual_id=new_id(),
        transaction_type=TransactionType.BILLED_SALES,
        transaction_class=TransactionClass.MILESTONE,
        billing_type=detail.billing_type,
        billing_status=BillingStatus.CUSTOMER_INVOICE_CREATED,
        adjustment_status=AdjustmentStatus.NONE,
        quantity=detail.quantity,
        unit_price=detail.unit_price,
        amount=money(detail.quantity * detail.unit_price),
        currency=invoice.currency,
        document_date=milestone.milestone_date,
        accounting_date=accounting_date,
        legal_entity=invoice.legal_entity,
        project_id=milestone.project_id,
        contract_id=invoice.contract_id,
        contract_line_id=milestone.contract_line_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.invoice_id,
        milestone_id=milestone.milestone_id,
        billing_method=BillingMethod.FIXED_PRICE,
    )


# --------------------------------------------------------------------------------------------
# 7. Corrective invoices
# --------------------------------------------------------------------------------------------


def correct_invoice(
    invoice: ProformaInvoice,
    billed_sales: Iterable[MsdynActual],
    *,
    invoice_date: date,
    new_id: NewId,
    open_corrections: Sequence[UUID] = (),
) -> ProformaInvoice:
    """Start a corrective draft of a confirmed invoice: a full credit the PM then adjusts.

    One detail per live billed-sales actual of the invoice (``billed_sales`` may hold others;
    they are ignored), grouped per contract line, each at quantity 0 with the billed quantity as
    ``original_quantity``. The PM sets the quantity still to bill with :func:`edit_detail`.

    Refused while ``open_corrections`` (the invoice's corrective drafts not yet confirmed) is
    not empty: both drafts would credit the same billed sales, and only the first confirmed
    could (rule decided in docs/dataverse.md). After it is confirmed (or deleted) the invoice
    may be corrected again.
    """
    if invoice.status is not InvoiceStatus.CONFIRMED:
        raise InvalidTransitionError(
            f"only a confirmed invoice can be corrected (status {invoice.status}): "
            f"invoice {invoice.invoice_id}"
        )
    if open_corrections:
        raise CorrectionAlreadyOpenError(
            f"invoice {invoice.invoice_id} already has corrective draft {open_corrections[0]} "
            f"not confirmed yet: correct it there, or confirm or delete it first"
        )
    billed = [
        a
        for a in billed_sales
        if a.invoice_id == invoice.invoice_id
        and a.transaction_type is TransactionType.BILLED_SALES
        and a.adjustment_status is AdjustmentStatus.NONE
    ]
    if not billed:
        raise InvalidTransitionError(
            f"invoice has no billed sales left to correct: invoice {invoice.invoice_id}"
        )
    line_order: list[UUID] = []
    by_line: dict[UUID, list[InvoiceLineDetail]] = {}
    for a in billed:
        if a.contract_line_id is None:
            raise RecordMismatchError(f"billed sales has no contract line: actual {a.actual_id}")
        if a.contract_line_id not in by_line:
            line_order.append(a.contract_line_id)
            by_line[a.contract_line_id] = []
        by_line[a.contract_line_id].append(
            InvoiceLineDetail(
                detail_id=new_id(),
                transaction_class=a.transaction_class,
                quantity=_ZERO,
                unit_price=a.unit_price,
                billing_type=a.billing_type,
                milestone_id=a.milestone_id,
                original_quantity=a.quantity,
                billed_actual_id=a.actual_id,
                resource=a.resource,
                role=a.role,
            )
        )
    lines = tuple(
        InvoiceLine(line_id=new_id(), contract_line_id=cl, details=tuple(by_line[cl]))
        for cl in line_order
    )
    return replace(
        invoice,
        invoice_id=new_id(),
        invoice_date=invoice_date,
        lines=lines,
        status=InvoiceStatus.DRAFT,
        tax_amount=_ZERO,
        is_corrective=True,
        corrects_invoice_id=invoice.invoice_id,
    )


def _confirm_corrective(
    invoice: ProformaInvoice,
    actuals: Mapping[UUID, MsdynActual],
    milestones: Mapping[UUID, Milestone],
    *,
    accounting_date: date,
    new_id: NewId,
) -> ConfirmResult:
    """Confirm a corrective invoice; see :func:`confirm_invoice`.

    Per detail whose quantity differs from what was billed:

    * the original billed sales is *adjusted*, with an unadjustable billed-sales reversal on
      this invoice (it is a line of the negative proposal, so it syncs);
    * a corrected quantity above zero is billed again: a billed-sales actual, with an unbilled
      actual (synced) and its reversal (skip sync) behind it, as in a first confirmation;
    * what is no longer billed goes back to the backlog as a chargeable unbilled actual, not
      ready to invoice, synced so that Finance accrues it again;
    * a milestone credited in full goes back to *ready* so that it can be invoiced again.

    A detail left at its billed quantity changes nothing.
    """
    created = BillingStatus.CUSTOMER_INVOICE_CREATED
    posted = BillingStatus.CUSTOMER_INVOICE_POSTED
    updated: list[MsdynActual] = []
    new: list[MsdynActual] = []
    updated_milestones: list[Milestone] = []

    for detail in invoice.details:
        if detail.billed_actual_id is None or detail.original_quantity is None:
            raise RecordMismatchError(
                f"corrective line detail does not reference billed sales: detail "
                f"{detail.detail_id} of invoice {invoice.invoice_id}"
            )
        if detail.quantity == detail.original_quantity:
            continue
        billed = _lookup_actual(actuals, detail.billed_actual_id)
        if (
            billed.transaction_type is not TransactionType.BILLED_SALES
            or billed.adjustment_status is not AdjustmentStatus.NONE
        ):
            raise ActualNotInvoiceableError(
                f"billed sales was already corrected (adjustment status "
                f"{billed.adjustment_status}): actual {billed.actual_id}, invoice "
                f"{invoice.invoice_id}"
            )
        if detail.milestone_id is not None and detail.quantity != 0:
            raise InvalidEditError(
                f"milestones can only be credited in full: detail {detail.detail_id} of "
                f"invoice {invoice.invoice_id}"
            )
        adjusted = _adjusted(billed)
        updated.append(adjusted)
        new.append(
            replace(
                _reversal(
                    adjusted,
                    new_id=new_id,
                    accounting_date=accounting_date,
                    skip_sync=False,
                    invoice_id=invoice.invoice_id,
                ),
                billing_status=created,
            )
        )
        if detail.milestone_id is not None:
            m = _lookup_milestone(milestones, detail.milestone_id)
            updated_milestones.append(replace(m, invoice_status=MilestoneInvoiceStatus.READY))
            continue
        if detail.quantity > 0:
            unbilled = _derived(
                billed,
                new_id=new_id,
                transaction_type=TransactionType.UNBILLED_SALES,
                billing_type=detail.billing_type,
                billing_status=posted,
                quantity=detail.quantity,
                accounting_date=accounting_date,
                invoice_id=invoice.invoice_id,
            )
            new.append(unbilled)
            new.append(
                _reversal(unbilled, new_id=new_id, accounting_date=accounting_date, skip_sync=True)
            )
            new.append(
                _derived(
                    unbilled,
                    new_id=new_id,
                    transaction_type=TransactionType.BILLED_SALES,
                    billing_type=detail.billing_type,
                    billing_status=created,
                    quantity=detail.quantity,
                    accounting_date=accounting_date,
                    invoice_id=invoice.invoice_id,
                    unbilled_actual_id=unbilled.actual_id,
                )
            )
        remaining = detail.original_quantity - detail.quantity
        if remaining > 0:
            new.append(
                _derived(
                    billed,
                    new_id=new_id,
                    transaction_type=TransactionType.UNBILLED_SALES,
                    billing_type=BillingType.CHARGEABLE,
                    billing_status=BillingStatus.UNBILLED_SALES_CREATED,
                    quantity=remaining,
                    accounting_date=accounting_date,
                    invoice_id=None,
                )
            )

    return ConfirmResult(
        invoice=replace(invoice, status=InvoiceStatus.CONFIRMED),
        updated_actuals=tuple(updated),
        new_actuals=tuple(new),
        updated_milestones=tuple(updated_milestones),
        expected_billed_sales_count=_billed_sales_count(new),
    )


# --------------------------------------------------------------------------------------------
# Accounting detail from Finance
# --------------------------------------------------------------------------------------------


def record_finance_posting(actual: MsdynActual, detail: AccountingDetail) -> MsdynActual:
    """Stamp the accounting detail Finance wrote back when it posted the actual.

    A billed-sales actual becomes *customer invoice posted* (domain.md, step 10); cost and
    unbilled sales keep their billing status (an integration journal posting only stamps them).
    """
    billing_status = actual.billing_status
    if actual.transaction_type is TransactionType.BILLED_SALES:
        billing_status = BillingStatus.CUSTOMER_INVOICE_POSTED
    return replace(
        actual,
        billing_status=billing_status,
        voucher=detail.voucher,
        voucher_date=detail.voucher_date,
        exchange_rate=detail.exchange_rate,
        accounting_currency_amount=detail.accounting_currency_amount,
        tax_amount=detail.tax_amount,
    )


def record_milestone_posted(milestone: Milestone) -> Milestone:
    """The customer invoice that billed a milestone was posted in Finance."""
    if milestone.invoice_status is not MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED:
        raise InvalidTransitionError(
            f"only an invoiced milestone can be posted (invoice status "
            f"{milestone.invoice_status}): milestone {milestone.milestone_id}"
        )
    return replace(milestone, invoice_status=MilestoneInvoiceStatus.CUSTOMER_INVOICE_POSTED)
