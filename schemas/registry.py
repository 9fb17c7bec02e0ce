"""Which payload model each topic carries: consumers validate with it, JSON Schema comes from it."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from schemas.dataverse_events import ActualsCreated, InvoiceConfirmed
from schemas.finance_events import InvoicePosted, JournalPosted, ProposalHeaderChanged
from schemas.mapped_events import ActualAccountingRecord, ProposalHeaderRecord, StagingActualRecord
from schemas.receipts import SyncReceipts
from schemas.topics import Topic

TOPIC_PAYLOADS: Final[dict[Topic, type[BaseModel]]] = {
    Topic.INVOICE_CONFIRMED: InvoiceConfirmed,
    Topic.ACTUALS_CREATED: ActualsCreated,
    Topic.INVOICE_POSTED: InvoicePosted,
    Topic.JOURNAL_POSTED: JournalPosted,
    Topic.PROPOSAL_HEADER_CHANGED: ProposalHeaderChanged,
    Topic.FO_INVOICE_PROPOSALS: ProposalHeaderRecord,
    Topic.FO_ACTUALS_STAGING: StagingActualRecord,
    Topic.DV_ACTUALS_ACCOUNTING: ActualAccountingRecord,
    Topic.SYNC_RECEIPTS: SyncReceipts,
}
