"""Consumer of `dv-actuals-accounting`: Finance's accounting detail written back on actuals.

The bridge maps the voucher, its date, the exchange rate, the amount in accounting currency and
the sales tax of each posted actual (domain.md, step 10); a message carries a run of them, each
with the bridge's record id. Applying one:

* stamps the actual (`domain.record_finance_posting`); a billed-sales actual becomes *customer
  invoice posted*;
* a live billed-sales actual of a milestone moves the milestone to *customer invoice posted*;
* answers the bridge on `sync-receipts` (applied).

Stamping is idempotent: the same detail twice leaves the same actual, and a re-send under a new
event id (the bridge re-drives records without a receipt) is applied and answered again. An
update for an actual Dataverse does not hold is refused: kept in `accounting_update_refused`
with its reason (domain.md, rule 8) and answered as rejected. Nothing here raises for a business
reason; an unexpected error parks the event (see `services.common.inbox`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from schemas.envelope import Envelope
from schemas.initial_sync import InitialSyncRequested
from schemas.mapped_events import ActualAccountingRecord, ActualAccountingRecords, BridgeRecord
from schemas.topics import Topic, topic_name
from schemas.vocabulary import AdjustmentStatus, MilestoneInvoiceStatus, TransactionType
from services.common import receipts
from services.common.db import DbConnection
from services.common.inbox import ApplyMany, Delivery, Handler, Subscription
from services.common.logging import get_logger
from services.common.settings import Settings
from services.dataverse import commands, domain
from services.dataverse import repository as repo

log = get_logger(__name__)

TARGET = "dataverse"


def accounting_handler(settings: Settings) -> Handler:
    """The handler of `dv-actuals-accounting` for these settings (one event)."""

    async def handle(conn: DbConnection, event: Envelope[Any]) -> None:
        await apply_accounting_detail(conn, settings, event)

    return handle


async def apply_accounting_detail(
    conn: DbConnection, settings: Settings, event: Envelope[Any]
) -> None:
    """Apply one accounting record inside the inbox transaction; see the module docstring."""
    await apply_accounting_details(conn, settings, [event])


async def apply_accounting_details(
    conn: DbConnection, settings: Settings, events: list[Envelope[Any]]
) -> None:
    """Apply accounting records in delivery order, inside the inbox transaction: one read of
    the actuals, one update, one receipts statement for the batch (see the module docstring).
    """
    carried: list[tuple[Envelope[Any], BridgeRecord[ActualAccountingRecord]]] = [
        (e, item) for e in events for item in e.payload.records
    ]
    records = [item.record for _, item in carried]
    # NOWAIT: a consumer batch that waited here while holding the rows it stamped before could
    # deadlock with a confirmation locking the same actuals in id order (seen with a 10,000-line
    # invoice). Failing at once rolls the batch back; the consumer retries it after a backoff.
    held = await repo.actuals_by_ids(
        conn, [r.msdyn_actualid for r in records], for_update=True, nowait=True
    )
    stamped: dict[UUID, domain.MsdynActual] = {}
    answers: list[receipts.Answer] = []
    per_invoice: dict[str | None, int] = {}
    for (event, item), record in zip(carried, records, strict=True):
        actual_id = record.msdyn_actualid
        actual = stamped.get(actual_id) or held.get(actual_id)
        if actual is None:
            reason = f"unknown actual {actual_id}: Dataverse holds no such msdyn_actual"
            await repo.record_refusal(
                conn,
                event_id=event.event_id,
                source_event_id=item.record_id,
                actual_id=actual_id,
                reason=reason,
                record=record.model_dump(mode="json"),
            )
            answers.append(receipts.Answer(event, item.record_id, str(actual_id), reason))
            log.warning("accounting_update_refused", actual_id=str(actual_id), reason=reason)
            continue
        stamped[actual_id] = domain.record_finance_posting(
            actual,
            domain.AccountingDetail(
                voucher=record.msdyn_externalreference,
                voucher_date=record.msdyn_externalreferencedate,
                exchange_rate=record.msdyn_exchangerate,
                accounting_currency_amount=record.msdyn_amountaccountingcurrency,
                tax_amount=record.msdyn_salestaxamount,
            ),
        )
        await _milestone_posted(conn, stamped[actual_id])
        answers.append(receipts.Answer(event, item.record_id, str(actual_id)))
        invoice_id = str(actual.invoice_id) if actual.invoice_id else None
        per_invoice[invoice_id] = per_invoice.get(invoice_id, 0) + 1
    await repo.update_actuals(conn, list(stamped.values()))
    await repo.mark_accounting_updated(conn, list(stamped))
    await receipts.answer_many(conn, settings, answers, TARGET)
    # One line per invoice (or per batch of unbilled actuals), not one per actual: thousands.
    for invoice_id, count in per_invoice.items():
        log.info("accounting_details_stamped", invoice_id=invoice_id, actuals=count)


async def _milestone_posted(conn: DbConnection, actual: domain.MsdynActual) -> None:
    """Move the milestone a posted billed sale bills to *customer invoice posted*.

    Only the live billed sale counts: a credit's reversal, or the posting of a billed sale that
    a correction has since adjusted, must not mark a milestone that went back to the backlog
    (or onto a new invoice) as posted. A second posting of the same sale changes nothing.
    """
    if (
        actual.milestone_id is None
        or actual.transaction_type is not TransactionType.BILLED_SALES
        or actual.adjustment_status is not AdjustmentStatus.NONE
    ):
        return
    milestone = await repo.get_milestone(conn, actual.milestone_id, for_update=True, nowait=True)
    if milestone.invoice_status is MilestoneInvoiceStatus.CUSTOMER_INVOICE_CREATED:
        await repo.update_milestones(conn, [domain.record_milestone_posted(milestone)])
        log.info("milestone_posted", milestone_id=str(milestone.milestone_id))


def snapshot_handler(settings: Settings) -> Handler:
    """The handler of `initial-sync-requested`: publish the snapshot the bridge asked for
    (`commands.publish_snapshot`), inside the inbox transaction, so a repeated signal is
    skipped and a crash before the commit publishes nothing."""

    async def handle(conn: DbConnection, event: Envelope[Any]) -> None:
        await commands.publish_snapshot(conn, settings, event.payload)

    return handle


def subscriptions(settings: Settings) -> list[Subscription]:
    """What the Dataverse service consumes."""
    return [
        Subscription(
            topic_name(Topic.INITIAL_SYNC_REQUESTED, settings.topic_prefix),
            InitialSyncRequested,
            snapshot_handler(settings),
        ),
        Subscription(
            topic_name(Topic.DV_ACTUALS_ACCOUNTING, settings.topic_prefix),
            ActualAccountingRecords,
            accounting_handler(settings),
            batch_handler=_batch(settings),
        ),
    ]


def _batch(settings: Settings) -> ApplyMany:
    async def apply(conn: DbConnection, deliveries: list[Delivery]) -> None:
        await apply_accounting_details(conn, settings, [d.event for d in deliveries])

    return apply
