"""`initial-sync-requested`: the bridge's signal asking Dataverse for a snapshot of a map's rows.

Dual-write's initial sync copies the rows that already exist on the map's master side to the
other side. The bridge does not read Dataverse's database: as Debezium's incremental snapshots
are triggered by a signal, it asks through this topic, and Dataverse answers by publishing its
existing rows on the map's own source topics, each message marked with the snapshot id
(`SnapshotMark` on `invoice-confirmed` and `actuals-created`).
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class SnapshotTable(StrEnum):
    """What a snapshot copies: confirmed invoice headers, or actuals."""

    CONFIRMED_INVOICES = "confirmed_invoices"
    ACTUALS = "actuals"


class InitialSyncRequested(BaseModel):
    """A request for a snapshot: its id (the initial-sync run's), the map asking and the table
    it needs; `legal_entities` narrows the copy (empty: every legal entity)."""

    model_config = ConfigDict(frozen=True)

    snapshot_id: UUID
    map_name: str = Field(min_length=1)
    table: SnapshotTable
    legal_entities: list[str] = Field(default_factory=list)
