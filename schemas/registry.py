"""Which payload model each topic carries: consumers validate with it, JSON Schema comes from it."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from schemas.dataverse_events import ActualsCreated, InvoiceConfirmed
from schemas.finance_events import InvoicePosted, JournalPosted, ProposalHeaderChanged
from schemas.initial_sync import InitialSyncRequested
from schemas.mapped_events import (
    ActualAccountingRecord,
    ActualAccountingRecords,
    ProposalHeaderRecord,
    StagingActualRecord,
    StagingActualRecords,
)
from schemas.receipts import SyncReceipts
from schemas.topics import Topic

TOPIC_PAYLOADS: Final[dict[Topic, type[BaseModel]]] = {
    Topic.INVOICE_CONFIRMED: InvoiceConfirmed,
    Topic.ACTUALS_CREATED: ActualsCreated,
    Topic.INVOICE_POSTED: InvoicePosted,
    Topic.JOURNAL_POSTED: JournalPosted,
    Topic.PROPOSAL_HEADER_CHANGED: ProposalHeaderChanged,
    Topic.FO_INVOICE_PROPOSALS: ProposalHeaderRecord,
    Topic.FO_ACTUALS_STAGING: StagingActualRecords,
    Topic.DV_ACTUALS_ACCOUNTING: ActualAccountingRecords,
    Topic.SYNC_RECEIPTS: SyncReceipts,
    Topic.INITIAL_SYNC_REQUESTED: InitialSyncRequested,
}

# What one record the bridge maps for each target topic is. The topics of RECORD_RUN_TOPICS
# carry runs of them (`BridgeRecord` items, each with its record id); the others one record
# per message, whose record id is the envelope's causation id.
MAPPED_RECORD_MODELS: Final[dict[Topic, type[BaseModel]]] = {
    Topic.FO_INVOICE_PROPOSALS: ProposalHeaderRecord,
    Topic.FO_ACTUALS_STAGING: StagingActualRecord,
    Topic.DV_ACTUALS_ACCOUNTING: ActualAccountingRecord,
}
RECORD_RUN_TOPICS: Final = frozenset({Topic.FO_ACTUALS_STAGING, Topic.DV_ACTUALS_ACCOUNTING})
# Records per message at most on those topics: about 900 bytes each, so a message stays far
# below the broker's default size limit (1 MiB).
MAX_RECORDS_PER_MESSAGE: Final = 500
