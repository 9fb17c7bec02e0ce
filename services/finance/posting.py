"""Posting: integration journals (project accountant) and proposals (receivables clerk).

A use-case module shaped like `commands.py` (lock, pure rule of `domain.py`, write through
`repository`, events to the outbox), kept apart because a posting is a unit of work of its own;
`api.py` calls it as it calls a command. One posting is one transaction: numbers from the
sequences, vouchers and ledger entries, the posted status, the accounting stamps on the staged
rows and the outbox events that carry them to Dataverse. A rule that refuses (closed period, no
lines, already posted) rolls all of it back, numbers included, so nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID

import asyncpg

from schemas.finance_events import ActualAccounting, InvoicePosted, JournalPosted
from schemas.topics import Topic, topic_name
from services.common import outbox
from services.common.db import DbConnection
from services.common.logging import get_logger
from services.common.settings import Settings
from services.finance import repository
from services.finance.domain import (
    AccountingStamp,
    FinanceRuleError,
    NumberSequence,
    post_integration_journal,
    post_proposal,
)

log = get_logger(__name__)

SOURCE = "finance"
INVOICE_POSTED = "invoice.posted"
JOURNAL_POSTED = "journal.posted"


def _accounting(stamp: AccountingStamp) -> ActualAccounting:
    return ActualAccounting(
        actual_id=UUID(stamp.actual_id),
        voucher=stamp.voucher,
        voucher_date=stamp.voucher_date,
        exchange_rate=stamp.exchange_rate,
        accounting_currency_amount=stamp.accounting_currency_amount,
        tax_amount=stamp.tax_amount,
    )


@dataclass(frozen=True)
class JournalPosting:
    """What posting one integration journal made: a voucher per line."""

    journal_id: str
    legal_entity: str
    lines: int
    vouchers: tuple[str, ...]


async def post_journal(conn: DbConnection, settings: Settings, journal_id: str) -> JournalPosting:
    """Post one integration journal: a voucher per line, stamps, one `journal-posted` per line.

    Events are keyed by actual id (DESIGN.md), so each actual's accounting detail keeps its
    order with any later change of the same actual; the correlation id is the journal id.
    """
    async with conn.transaction():
        header = await repository.get_journal_row(conn, journal_id, for_update=True)
        lines = await repository.journal_line_rows(conn, journal_id)
        journal = repository.journal_from_records(header, lines)
        setups = await repository.load_setups(conn, [journal.legal_entity])
        rates = await repository.contract_fixed_rates(
            conn, (line.contract_id for line in journal.lines)
        )
        numbers = await repository.next_numbers(
            conn, journal.legal_entity, NumberSequence.VOUCHER, len(journal.lines)
        )
        posted = post_integration_journal(journal, setups[journal.legal_entity], numbers, rates)
        await repository.insert_vouchers(conn, posted.vouchers, "integration_journal", journal_id)
        await repository.mark_journal_posted(
            conn, journal_id, {s.actual_id: s.voucher for s in posted.stamps}
        )
        await repository.stamp_staging_rows(conn, posted.stamps)
        topic = topic_name(Topic.JOURNAL_POSTED, settings.topic_prefix)
        await outbox.add_many(
            conn,
            [
                (
                    topic,
                    stamp.actual_id,
                    outbox.envelope(
                        JOURNAL_POSTED,
                        SOURCE,
                        JournalPosted(
                            journal_id=journal_id,
                            legal_entity=journal.legal_entity,
                            voucher=stamp.voucher,
                            posting_date=stamp.voucher_date,
                            actuals=[_accounting(stamp)],
                            line_number=line.line_number,
                            journal_lines=len(journal.lines),
                        ),
                        correlation_id=journal_id,
                    ),
                )
                for line, stamp in zip(journal.lines, posted.stamps, strict=True)
            ],
        )
    log.info(
        "integration_journal_posted",
        journal_id=journal_id,
        legal_entity=journal.legal_entity,
        vouchers=len(posted.vouchers),
        first_voucher=numbers[0] if numbers else None,
    )
    return JournalPosting(
        journal_id=journal_id,
        legal_entity=journal.legal_entity,
        lines=len(journal.lines),
        vouchers=tuple(v.voucher for v in posted.vouchers),
    )


async def post_all_journals(
    pool: asyncpg.Pool, settings: Settings, legal_entity: str | None = None
) -> list[JournalPosting]:
    """Post every unposted journal (draft, or error from an earlier try), each on its own.

    A journal a rule refuses is marked `error` with the reason (visible in GET /journals) and
    the others still post; the result lists the journals posted.
    """
    posted: list[JournalPosting] = []
    async with pool.acquire() as conn:
        candidates = [
            r["journal_id"]
            for status in ("draft", "error")
            for r in await repository.list_journals(conn, status, legal_entity)
        ]
        for journal_id in candidates:
            try:
                posted.append(await post_journal(conn, settings, journal_id))
            except FinanceRuleError as exc:
                await repository.mark_journal_error(conn, journal_id, str(exc))
                log.warning("integration_journal_refused", journal_id=journal_id, reason=str(exc))
    return posted


async def post_proposal_invoice(
    conn: DbConnection, settings: Settings, proposal_id: str, posting_date: date | None = None
) -> str:
    """Post a proposal as a customer invoice and publish `invoice-posted`; returns its number.

    The posting date defaults to the proposal's invoice date; the closed-period rule may move
    it. The event is keyed and correlated by the invoice id (the proposal id).
    """
    async with conn.transaction():
        record = await repository.get_proposal(conn, proposal_id, for_update=True)
        header = repository.proposal_header_from_record(record)
        lines = await repository.proposal_lines(conn, proposal_id)
        setups = await repository.load_setups(conn, [header.legal_entity])
        rates = await repository.contract_fixed_rates(conn, [header.contract_id])
        entity = header.legal_entity
        # Invoice before voucher, in every posting: one lock order on the entity's sequences.
        (invoice_number,) = await repository.next_numbers(conn, entity, NumberSequence.INVOICE, 1)
        (voucher_number,) = await repository.next_numbers(conn, entity, NumberSequence.VOUCHER, 1)
        posted = post_proposal(
            header,
            lines,
            setups[header.legal_entity],
            posting_date or record["invoice_date"],
            invoice_number,
            voucher_number,
            rates,
        )
        await repository.insert_vouchers(conn, [posted.voucher], "customer_invoice", invoice_number)
        await repository.insert_customer_invoice(conn, posted.invoice)
        await repository.mark_proposal_posted(conn, proposal_id, invoice_number)
        await repository.stamp_staging_rows(conn, posted.stamps)
        invoice = posted.invoice
        await outbox.add(
            conn,
            topic_name(Topic.INVOICE_POSTED, settings.topic_prefix),
            proposal_id,
            outbox.envelope(
                INVOICE_POSTED,
                SOURCE,
                InvoicePosted(
                    invoice_id=UUID(proposal_id),
                    legal_entity=invoice.legal_entity,
                    customer_invoice_number=invoice.invoice_number,
                    voucher=invoice.voucher,
                    posting_date=invoice.invoice_date,
                    total_amount=invoice.total_amount,
                    currency=invoice.currency,
                    actuals=[_accounting(stamp) for stamp in posted.stamps],
                    net_amount=invoice.net_amount,
                    tax_amount=invoice.tax_amount,
                    exchange_rate=invoice.exchange_rate,
                    accounting_currency=invoice.accounting_currency,
                    total_accounting_amount=invoice.total_accounting_amount,
                ),
                correlation_id=proposal_id,
            ),
        )
    log.info(
        "proposal_posted",
        invoice_id=proposal_id,
        customer_invoice=invoice_number,
        voucher=voucher_number,
        total_amount=str(invoice.total_amount),
        currency=invoice.currency,
        lines=len(lines),
    )
    return invoice_number
