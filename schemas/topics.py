"""Every topic of the integration, named once (DESIGN.md, "Topics").

Names carry a configurable prefix so several simulations can share one cluster; code asks
`topic_name(Topic.X, prefix)` instead of spelling a name.
"""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """Base names of the topics, before the prefix."""

    INVOICE_CONFIRMED = "invoice-confirmed"
    ACTUALS_CREATED = "actuals-created"
    INVOICE_POSTED = "invoice-posted"
    JOURNAL_POSTED = "journal-posted"
    PROPOSAL_HEADER_CHANGED = "proposal-header-changed"
    FO_INVOICE_PROPOSALS = "fo-invoice-proposals"
    FO_ACTUALS_STAGING = "fo-actuals-staging"
    DV_ACTUALS_ACCOUNTING = "dv-actuals-accounting"
    SYNC_RECEIPTS = "sync-receipts"
    INITIAL_SYNC_REQUESTED = "initial-sync-requested"


DLQ_SUFFIX = ".dlq"

# Topics that a consumer reads and so may need a dead-letter topic beside them.
CONSUMED_TOPICS: tuple[Topic, ...] = tuple(Topic)


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """Full topic name with the simulation's prefix."""
    return f"{prefix}{topic}"


def dlq_name(topic: str) -> str:
    """Dead-letter topic of an already prefixed topic name."""
    return f"{topic}{DLQ_SUFFIX}"


def all_topic_names(prefix: str = "") -> list[str]:
    """Every topic to provision: each topic and its dead-letter topic."""
    names = [topic_name(t, prefix) for t in Topic]
    return names + [dlq_name(n) for n in names]
