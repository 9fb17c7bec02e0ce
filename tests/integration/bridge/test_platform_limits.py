"""Microsoft's live-sync limits in the bridge process, through the topics (docs/bridge.md,
"Microsoft's limits"): a 1,500-line invoice confirmed at once is one source transaction of
1,501 records (its header and 1,500 billed lines; the skip-sync reversals are not synced).

With `DWSIM_PLATFORM_LIMITS=microsoft` it fails whole into the error queue with the platform's
reason and nothing of it reaches Finance; with the default (`none`) it reaches Finance whole
and `/stats` counts it as a transaction that would fail in production. Dataverse is played by a
plain producer sending what `services.dataverse.events` sends for such a confirmation (the
header, then the actuals in runs of 500, each message naming the transaction); Finance by a
fake target that applies every record.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

import pytest

from schemas.dataverse_events import (
    ActualCreated,
    ActualsCreated,
    InvoiceConfirmed,
    SourceTransaction,
)
from schemas.topics import Topic
from schemas.vocabulary import TransactionType
from services.bridge.table_maps import ACTUALS_MAP_NAME, PROPOSAL_MAP_NAME
from services.common.settings import Settings
from tests.integration.bridge.bridge_harness import (
    BridgeProcess,
    FakeTarget,
    Publisher,
    TopicReader,
    actual_created,
    invoice_confirmed,
)
from tests.integration.bridge.conftest import StartBridge
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

LINES = 1_500
RUN = 500  # Dataverse's actuals per message (services/dataverse/events.py)
REASON = "platform limit: transaction of 1,501 records > 1,000 records per dual-write transaction"


def large_invoice() -> tuple[InvoiceConfirmed, list[ActualCreated]]:
    """A confirmed 1,500-line invoice: its header and its new actuals in creation order (per
    line, the skip-sync reversal of the unbilled actual, then the billed-sales actual)."""
    transaction = SourceTransaction(transaction_id=uuid4(), records=1 + LINES, legal_entities=1)
    header = invoice_confirmed(expected_billed_lines=LINES, transaction=transaction)
    project_id = uuid4()
    actuals: list[ActualCreated] = []
    for _ in range(LINES):
        common = {"invoice_id": header.invoice_id, "project_id": project_id}
        actuals.append(
            actual_created(
                **common,
                transaction_type=TransactionType.UNBILLED_SALES,
                quantity=Decimal("-8"),
                amount=Decimal("-1600"),
                skip_sync=True,
            )
        )
        actuals.append(actual_created(**common))
    return header, actuals


async def confirm(
    settings: Settings, header: InvoiceConfirmed, actuals: list[ActualCreated]
) -> None:
    """Publish the confirmation as Dataverse's relay does: header first, then runs of 500."""
    async with Publisher(settings) as dataverse:
        await dataverse.confirm(header)
        for start in range(0, len(actuals), RUN):
            await dataverse.send(
                Topic.ACTUALS_CREATED,
                str(header.invoice_id),
                ActualsCreated(
                    actuals=actuals[start : start + RUN], transaction=header.transaction
                ),
                "actuals.created",
                "dataverse",
                correlation=header.invoice_id,
            )
        await dataverse.flush()


async def records_settled(bridge: BridgeProcess, invoice_id: str, status: str, count: int) -> None:
    async def settled() -> bool:
        found = await bridge.get("/records", invoice_id=invoice_id, status=status, limit=5_000)
        return len(found) == count

    await wait_for(settled, 60, what=f"{count} {status} records of invoice {invoice_id}")


async def filtered_counted(bridge: BridgeProcess, invoice_id: str, count: int) -> None:
    """Wait until the bridge counted `count` source rows of the invoice filtered (they leave
    no record)."""

    async def counted() -> bool:
        found = await bridge.get("/filtered", invoice_id=invoice_id)
        return sum(f["source_rows"] for f in found) == count

    await wait_for(counted, 60, what=f"{count} filtered source rows of invoice {invoice_id}")


async def test_with_microsofts_limits_a_1500_line_invoice_fails_whole_with_the_platforms_reason(
    settings: Settings, start_bridge: StartBridge
) -> None:
    """Proves that with platform_limits=microsoft the header and all 1,500 billed lines are in
    the error queue as platform-limit errors with the platform's reason, the activity log of
    both maps says the transaction failed, `/stats` counts one failed transaction per map,
    nothing of the invoice reaches Finance's topics, and a retry fails it again."""
    bridge = start_bridge(DWSIM_PLATFORM_LIMITS="microsoft")
    await bridge.wait_ready()
    header, actuals = large_invoice()
    invoice_id = str(header.invoice_id)
    async with FakeTarget(settings) as finance:
        await confirm(settings, header, actuals)
        await records_settled(bridge, invoice_id, "failed", 1 + LINES)
        await filtered_counted(bridge, invoice_id, LINES)  # the skip-sync reversals
        errors = [e for e in await bridge.get("/errors") if e["invoice_id"] == invoice_id]
        assert len(errors) == 1 + LINES
        assert {e["error_type"] for e in errors} == {"platform_limit"}
        assert {e["reason"].split(";")[0] for e in errors} == {REASON}
        by_map = {
            m: sum(e["map_name"] == m for e in errors)
            for m in (PROPOSAL_MAP_NAME, ACTUALS_MAP_NAME)
        }
        assert by_map == {PROPOSAL_MAP_NAME: 1, ACTUALS_MAP_NAME: LINES}
        for slug in ("invoices", "actuals"):
            [logged] = await bridge.get("/activity", map=slug, kind="platform_limit")
            assert logged["invoice_id"] == invoice_id
            assert "fails (platform limits applied)" in logged["message"]
            assert REASON in logged["message"]
        stats = await bridge.get("/stats")
        for name in (PROPOSAL_MAP_NAME, ACTUALS_MAP_NAME):
            assert stats[name]["transactions_failed_platform_limits"] == 1
            assert stats[name]["transactions_would_fail_in_production"] == 0
        [over] = [
            t for t in await bridge.get("/platform-limits") if t["map_name"] == PROPOSAL_MAP_NAME
        ]
        assert (over["outcome"], over["records"], over["breach"]) == ("fails", 1 + LINES, REASON)

        # A retry does not get round the platform: the transaction is as big as it was.
        header_error = next(e for e in errors if e["map_name"] == PROPOSAL_MAP_NAME)
        retried = (await bridge.post(f"/errors/{header_error['id']}/retry")).json()
        assert retried["status"] == "failed"
        assert retried["reason"].startswith(REASON)

        # Nothing of the invoice on Finance's topics, read to their high-water marks.
        async with TopicReader(
            settings, Topic.FO_INVOICE_PROPOSALS, Topic.FO_ACTUALS_STAGING
        ) as topics:
            delivered = await topics.read_to_high_water()
        assert [m for m in delivered if m.value.get("correlation_id") == invoice_id] == []
        assert finance.delivered == []


async def test_without_limits_the_same_invoice_reaches_finance_whole_and_counts_as_would_fail(
    settings: Settings, bridge: BridgeProcess
) -> None:
    """Proves that with the default platform_limits=none the header and all 1,500 billed lines
    reach Finance and are synced, no error is raised, and `/stats` counts one transaction per
    map that would fail in production, with the reason in the activity log."""
    header, actuals = large_invoice()
    invoice_id = str(header.invoice_id)
    async with FakeTarget(settings) as finance:
        await confirm(settings, header, actuals)
        await records_settled(bridge, invoice_id, "synced", 1 + LINES)
        staged = {m.value["causation_id"] for m in finance.delivered if "staging" in m.topic}
        proposals = [m for m in finance.delivered if "proposals" in m.topic]
        assert len(staged) == LINES
        assert len(proposals) >= 1
    assert await bridge.get("/errors") == []
    # The same reading that finds nothing of the invoice with the limits on finds it whole.
    async with TopicReader(
        settings, Topic.FO_INVOICE_PROPOSALS, Topic.FO_ACTUALS_STAGING
    ) as topics:
        delivered = await topics.read_to_high_water()
    assert (
        len(
            {
                m.value["causation_id"]
                for m in delivered
                if m.value.get("correlation_id") == invoice_id
            }
        )
        == 1 + LINES
    )
    stats = await bridge.get("/stats")
    for name in (PROPOSAL_MAP_NAME, ACTUALS_MAP_NAME):
        assert stats[name]["transactions_would_fail_in_production"] == 1
        assert stats[name]["transactions_failed_platform_limits"] == 0
    [logged] = await bridge.get("/activity", map="invoices", kind="platform_limit")
    assert "would fail in production" in logged["message"]
    assert REASON in logged["message"]
