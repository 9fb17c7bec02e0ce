"""Bridge worker processes: two in one group, SIGKILL and restart, SIGTERM, a broker restarted
empty. The checker counts effects in the bridge database and on the topics with plain clients."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infra import broker, topics
from infra.processes import free_port
from schemas.topics import Topic
from services.common.service import service_state_file
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


async def _bridge_db(settings: Settings, sql: str) -> Any:
    conn = await asyncpg.connect(settings.service_database_url("bridge"))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _record_count(settings: Settings) -> int:
    try:
        count: int = await _bridge_db(settings, "SELECT count(*) FROM bridge_record")
    except asyncpg.UndefinedTableError:
        return 0
    return count


async def _effects_once(settings: Settings, expected: int) -> None:
    """Each source event made exactly one record, sent exactly once (one outbox row each)."""
    assert await _record_count(settings) == expected
    assert await _bridge_db(settings, "SELECT count(*) FROM dwsim_outbox") == expected
    assert await _bridge_db(settings, "SELECT max(attempts) FROM bridge_record") == 1
    assert (
        await _bridge_db(
            settings,
            "SELECT count(*) FROM dwsim_inbox WHERE topic LIKE '%actuals-created'",
        )
        == expected
    )


async def test_two_workers_split_partitions_and_a_rebalance_duplicates_no_effect(
    settings: Settings, start_bridge: StartBridge
) -> None:
    first = start_bridge()
    await first.wait_ready()
    second = start_bridge()
    await second.wait_ready()

    async def split() -> bool:
        a, b = set(await first.assigned()), set(await second.assigned())
        return bool(a) and bool(b) and not a & b and len(a | b) == 6 * 6

    await wait_for(split, 30, what="both workers to share the 36 partitions")
    total = 300
    async with Publisher(settings) as dataverse:
        for n in range(total):
            await dataverse.actual(actual_created(invoice_id=invoice_confirmed().invoice_id))
            if n == 100:
                await dataverse.flush()
                await wait_for(lambda: _at_least(settings, 50), what="50 records")
                first.signal(signal.SIGTERM)  # rebalance mid-stream
    assert first.wait_exit(10) == 0
    await wait_for(lambda: _at_least(settings, total), 60, what=f"{total} records")

    # The first worker may drain its partitions before it leaves, so every record can be in
    # while the group is still rebalancing: wait for the takeover (it once read 18 of 36
    # here), then prove it with records on every partition.
    async def taken_over() -> bool:
        return len(await second.assigned()) == 36

    await wait_for(taken_over, 30, what="the second worker to hold all 36 partitions")
    after = 60
    async with Publisher(settings) as dataverse:
        for _ in range(after):
            await dataverse.actual(actual_created(invoice_id=invoice_confirmed().invoice_id))
    total += after
    await wait_for(lambda: _at_least(settings, total), 60, what=f"{total} records")
    await _effects_once(settings, total)
    async with TopicReader(settings, Topic.FO_ACTUALS_STAGING) as finance:
        staged = await finance.until(lambda ms: len(ms) >= total, what=f"{total} staging rows")
    assert len({m.value["causation_id"] for m in staged}) == total


async def _at_least(settings: Settings, n: int) -> bool:
    return await _record_count(settings) >= n


async def test_worker_killed_three_times_is_processing_again_within_10_s_each_time(
    settings: Settings, start_bridge: StartBridge
) -> None:
    worker = start_bridge()
    await worker.wait_ready()
    sent = 0
    sent_ids: list[str] = []

    def actual() -> Any:
        created = actual_created(invoice_id=invoice_confirmed().invoice_id)
        sent_ids.append(str(created.actual_id))
        return created

    async with Publisher(settings) as dataverse:
        for round_ in range(3):
            for _ in range(60):
                await dataverse.actual(actual())
                sent += 1
            await dataverse.flush()
            await wait_for(lambda s=sent: _at_least(settings, s - 30), what="records in flight")
            worker.signal(signal.SIGKILL)
            worker.wait_exit(5)
            restarted_at = time.monotonic()
            worker = start_bridge()
            # A probe published right after the restart: processed within 10 s of the start.
            await dataverse.actual(actual())
            sent += 1
            await dataverse.flush()
            await wait_for(lambda s=sent: _at_least(settings, s), 10, what="processing again")
            elapsed = time.monotonic() - restarted_at
            assert elapsed < 10, f"round {round_}: processing again after {elapsed:.1f} s"
            print(f"round {round_}: processing again {elapsed:.1f} s after the restart")
    await _effects_once(settings, sent)

    # The checker reads what reached the staging topic, not the bridge's own outbox: every
    # actual sent is there (nothing lost), under one bridge record only (no effect twice). A
    # record may travel twice (a relay killed between publishing and marking sends it again,
    # and the target's inbox skips the repeat), so records are counted by id, not messages.
    async def all_published() -> bool:
        unpublished = "SELECT count(*) FROM dwsim_outbox WHERE published_at IS NULL"
        return bool(await _bridge_db(settings, unpublished) == 0)

    await wait_for(all_published, what="the bridge's outbox to be published")
    async with TopicReader(settings, Topic.FO_ACTUALS_STAGING) as finance:
        staged = await finance.read_to_high_water()
    records_by_actual: dict[str, set[str]] = {}
    for message in staged:
        actual_id = message.value["payload"]["msdyn_actualid"]
        records_by_actual.setdefault(actual_id, set()).add(message.value["causation_id"])
    assert sorted(records_by_actual) == sorted(sent_ids)
    twice = {a: r for a, r in records_by_actual.items() if len(r) > 1}
    assert twice == {}, f"actuals staged under more than one record: {twice}"
    print(f"{len(staged)} staging messages for {len(sent_ids)} actuals")


async def test_worker_stops_cleanly_on_sigterm_within_10_s(
    settings: Settings, bridge: BridgeProcess
) -> None:
    state = service_state_file(settings, "bridge")
    assert state.exists()
    async with Publisher(settings) as dataverse:
        await dataverse.confirm(invoice_confirmed())
    await wait_for(lambda: _at_least(settings, 1), what="one record")
    started = time.monotonic()
    bridge.signal(signal.SIGTERM)
    code = bridge.wait_exit(10)
    assert code == 0, bridge.tail()
    assert time.monotonic() - started < 10
    assert not state.exists()
    assert "service_stopped" in bridge.tail()


async def test_broker_restarted_empty_mid_stream_loses_no_record(
    settings: Settings, start_bridge: StartBridge, tmp_path: Path
) -> None:
    port = free_port()
    own = settings.model_copy(
        update={"home": tmp_path / "broker", "broker_port": port, "kafka_bootstrap": None}
    )
    on_own = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "receipt_timeout_s": 2.0}
    )
    broker.start(own)
    bridge: BridgeProcess | None = None
    try:
        await topics.provision_async(on_own)
        bridge = start_bridge(on_own)
        await bridge.wait_ready()
        assert bridge is not None
        first = [invoice_confirmed() for _ in range(20)]
        second = [invoice_confirmed() for _ in range(20)]
        async with FakeTarget(on_own), Publisher(on_own) as dataverse:
            for invoice in first:
                await dataverse.confirm(invoice)
            await wait_for(lambda: _synced(on_own, 20), what="the first 20 synced")
        # Finance stops answering; the next 20 are sent but never answered...
        async with Publisher(on_own) as dataverse:
            for invoice in second:
                await dataverse.confirm(invoice)
        await wait_for(lambda: _at_least(on_own, 40), what="40 records")
        # ...and the broker loses its whole log.
        broker.stop(own)
        broker.start(own)
        await topics.provision_async(on_own)
        # Twenty receipts overdue are twenty timeout errors: the default alert rule (10 in 15
        # minutes) pauses the map, as Microsoft intends while one side is down.
        await wait_for(lambda: _map_state(bridge, "paused"), 60, what="the alert to pause")
        target = FakeTarget(on_own)
        async with target:
            resumed = await bridge.post("/maps/invoices/resume")
            assert resumed.status_code == 200, resumed.text
            await wait_for(lambda: _synced(on_own, 40), 60, what="all 40 synced after re-drive")
            # The worker consumes again after the restart, too.
            late = invoice_confirmed()
            async with Publisher(on_own) as dataverse:
                await dataverse.confirm(late)
            await wait_for(lambda: _synced(on_own, 41), 60, what="a header sent after restart")
        redelivered = {m.value["payload"]["ProposalId"] for m in target.delivered}
        assert {str(i.invoice_id) for i in second} <= redelivered
        assert (
            await _bridge_db(on_own, "SELECT count(*) FROM bridge_activity WHERE kind = 'redrive'")
            >= 1
        )
        assert await _record_count(on_own) == 41
    finally:
        if bridge is not None:
            bridge.stop()  # before its broker goes, so it can leave its group cleanly
        broker.stop(own)


async def _map_state(bridge: BridgeProcess, state: str) -> bool:
    found: str = (await bridge.get("/maps/invoices"))["state"]
    return found == state


async def _synced(settings: Settings, n: int) -> bool:
    try:
        count: int = await _bridge_db(
            settings, "SELECT count(*) FROM bridge_record WHERE status = 'synced'"
        )
    except asyncpg.UndefinedTableError:
        return False
    return count >= n
