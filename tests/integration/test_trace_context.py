"""Trace context through the inbox and the outbox, on the real PostgreSQL (no broker involved;
tests/e2e/test_trace.py follows the headers through the broker).

- a batch of two invoices' events applied in one transaction: each event's handler writes its
  outbox row in its own invoice's trace, and the inbox keeps the traceparent each arrived with;
- work this process starts itself (a request without a traceparent, an import run) resumes an
  invoice's trace from the inbox before it writes for that invoice; a caller's trace is kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from schemas.envelope import Envelope
from services.common import outbox, tracing
from services.common.db import DbConnection
from services.common.inbox import Delivery, apply_batch_once
from services.common.settings import Settings
from tests.integration.delivery_fixtures import Ping, add_ping, open_service_pool

pytestmark = pytest.mark.integration

TOPIC = "trace-test"


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_service_pool(settings, "dataverse")
    yield pool
    await pool.close()


def traced_ping(n: int, trace: tracing.TraceContext | None) -> Delivery:
    """A delivery of a Ping of invoice `inv-<n>` that arrived with `trace` in its headers."""
    event = outbox.envelope("ping", "test", Ping(n=n), correlation_id=f"inv-{n}")
    return Delivery(event, TOPIC, f"k{n}", event.model_dump_json().encode(), trace)


# What each handler saw as its invoice's trace id while it ran (what its log lines carry).
seen_in_handler: dict[str, str | None] = {}


async def answer_each(conn: DbConnection, deliveries: list[Delivery]) -> None:
    """A bulk handler writing one outbox row per event, for the event's invoice."""
    for d in deliveries:
        assert d.event.correlation_id is not None
        seen_in_handler[d.event.correlation_id] = tracing.trace_id_for(d.event.correlation_id)
    await outbox.add_many(
        conn,
        [
            (f"{TOPIC}-answers", d.key, _answer(d.event))
            for d in deliveries  # one statement for the batch, like the real handlers
        ],
    )


def _answer(event: Envelope[Any]) -> Envelope[Any]:
    return outbox.envelope(
        "pong", "test", Ping(n=event.payload.n), correlation_id=event.correlation_id
    )


async def answer_one(conn: DbConnection, delivery: Delivery) -> None:
    await answer_each(conn, [delivery])


async def traces_of_rows(pool: asyncpg.Pool, table: str) -> dict[str, str]:
    """Correlation id → trace id of the rows of `dwsim_outbox` or `dwsim_inbox`."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT correlation_id, traceparent FROM {table}")
    found = {}
    for row in rows:
        parsed = tracing.parse_traceparent(row["traceparent"])
        assert parsed is not None, row
        found[row["correlation_id"]] = parsed.trace_id
    return found


async def test_a_batch_of_two_invoices_writes_each_answer_in_its_invoice_s_trace(
    pool: asyncpg.Pool,
) -> None:
    one, two = tracing.new_trace(), tracing.new_trace()
    seen_in_handler.clear()
    async with pool.acquire() as conn, conn.transaction():
        kinds = await apply_batch_once(
            conn, [traced_ping(1, one), traced_ping(2, two)], answer_one, answer_each
        )
    assert kinds == ["applied", "applied"]
    # The outbox rows alone would not prove it: a local root resumes from the inbox rows of
    # the same transaction. What the handler saw is what the event's header made current.
    assert seen_in_handler == {"inv-1": one.trace_id, "inv-2": two.trace_id}
    assert await traces_of_rows(pool, "dwsim_outbox") == {
        "inv-1": one.trace_id,
        "inv-2": two.trace_id,
    }
    assert await traces_of_rows(pool, "dwsim_inbox") == {
        "inv-1": one.trace_id,
        "inv-2": two.trace_id,
    }


async def test_work_started_here_resumes_the_invoice_s_trace_and_a_caller_s_is_kept(
    pool: asyncpg.Pool,
) -> None:
    arrived = tracing.new_trace()
    async with pool.acquire() as conn, conn.transaction():
        await apply_batch_once(conn, [traced_ping(3, arrived)], answer_one, answer_each)
    caller = tracing.new_trace()
    async with pool.acquire() as conn:
        for topic, n, parent in (
            (f"{TOPIC}-posted", 3, None),  # a posting request without a traceparent
            (f"{TOPIC}-called", 3, caller),  # a request with the caller's own trace
            (f"{TOPIC}-new", 4, None),  # an invoice this service never received
        ):
            with tracing.continued(parent):
                async with conn.transaction():
                    await add_ping(conn, topic, n)
        rows = await conn.fetch(
            "SELECT topic, traceparent FROM dwsim_outbox WHERE topic LIKE $1", f"{TOPIC}-%"
        )
    traces = {}
    for row in rows:
        parsed = tracing.parse_traceparent(row["traceparent"])
        assert parsed is not None, row
        traces[row["topic"]] = parsed.trace_id
    assert traces[f"{TOPIC}-posted"] == arrived.trace_id
    assert traces[f"{TOPIC}-called"] == caller.trace_id
    assert traces[f"{TOPIC}-new"] not in (arrived.trace_id, caller.trace_id)
