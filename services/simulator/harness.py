"""A running, controllable stack for integration tests: what the pytest plugin hands a test.

`DwsimStack` is the session's stack: the broker, PostgreSQL and the three services, started in
a home of its own by the same `bring_up` that `dwsim up`, the demo and the scenarios use (or
the servers of `DWSIM_KAFKA_BOOTSTRAP` / `DWSIM_DATABASE_URL`), with the topic names and
bootstrap address for the user's own producers and consumers, and the process faults.

`DwsimTest` is one test's view of it: typed clients, builders that read as the business story,
waits with deadlines, map faults, and `assert_reconciled()` over the test's own records.

Isolation without restarting the stack: every test gets legal entities of its own (ids
`T<tag><n>`, a fresh tag per test) and builds its customers, contracts and invoices in them.
Its reconciliation reads only those (per contract, per project, per legal entity:
`snapshot.fetch_snapshot_of`), and it posts only its own legal entities' journals; so another
test's records, finished or in flight, never show in its assertions. After the test, what a
fault left behind is put back (services started, broker continued or started, maps resumed or
run), so the next test starts on a running stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from infra import broker, postgres
from infra.topics import provision_async
from schemas.topics import Topic, topic_name
from services.common.settings import SERVICES, Settings
from services.simulator import faults
from services.simulator.builders import (
    Contract,
    add_milestone,
    approve_entry,
    confirm_invoice,
    create_contract,
    create_customer,
    set_up_legal_entity,
)
from services.simulator.clients import ApiClient, ApiError, Services
from services.simulator.deadlines import until
from services.simulator.processes import service_url
from services.simulator.reconcile import Comparison, Report, reconcile
from services.simulator.seed import ContractPlan, EntryPlan
from services.simulator.snapshot import fetch_snapshot_of
from services.simulator.stack import Started, bring_up, take_down
from services.simulator.topic_reader import wait_for_event

Json = Any


class NotReconciled(AssertionError):
    """The test's records differ between Dataverse and Finance; the message lists each
    difference with its cause (an AssertionError, so pytest shows it as a failed test)."""


@dataclass
class Timings:
    """What the harness measured, for the plugin's closing summary."""

    stack_start_s: float = 0.0
    isolation_s: list[float] = field(default_factory=list)
    reconcile_s: list[float] = field(default_factory=list)


class DwsimStack:
    """The session's stack: started (or attached to) once, stopped after the last test."""

    def __init__(self, settings: Settings, started: Started, own_home: Path | None) -> None:
        self.settings = settings
        self._started = started
        self._own_home = own_home
        self.timings = Timings()

    @classmethod
    def start(cls, overrides: Mapping[str, object] | None = None) -> DwsimStack:
        """Start what is not running: broker and PostgreSQL unless `DWSIM_KAFKA_BOOTSTRAP` /
        `DWSIM_DATABASE_URL` name them, then the three services, in `DWSIM_HOME` if set, else
        a temporary home removed at `stop`.

        On servers named by the environment the session takes a topic and database prefix of
        its own (`pytest<tag>-`, `pytest<tag>_`), so two CI jobs sharing a cluster never read
        each other's events. `overrides` are settings (e.g. `receipt_timeout_s`).
        """
        began = time.monotonic()
        own_home = None if os.environ.get("DWSIM_HOME") else Path(tempfile.mkdtemp("", "dwsim-"))
        base = Settings(home=own_home) if own_home else Settings()
        updates: dict[str, object] = dict(overrides or {})
        tag = uuid.uuid4().hex[:8]
        if base.kafka_bootstrap:
            updates.setdefault("topic_prefix", f"{base.topic_prefix}pytest{tag}-")
        if base.database_url:
            updates.setdefault("database_prefix", f"{base.database_prefix}pytest{tag}_")
        settings = base.model_copy(update=updates)
        try:
            started, _ = bring_up(settings)
        except BaseException:
            if own_home:
                shutil.rmtree(own_home, ignore_errors=True)
            raise
        stack = cls(settings, started, own_home)
        stack.timings.stack_start_s = time.monotonic() - began
        return stack

    def stop(self) -> None:
        """Stop what `start` started; on a configured PostgreSQL, drop the session's
        databases (its prefix's, never others); remove the temporary home."""
        take_down(self.settings, self._started)
        if self.settings.database_url and self.settings.database_prefix:
            postgres.start_empty(self.settings)
        if self._own_home:
            shutil.rmtree(self._own_home, ignore_errors=True)

    # --- for the user's own producers and consumers ----------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address, for the user's own Kafka clients."""
        return self.settings.bootstrap_servers()

    def topic(self, topic: Topic | str) -> str:
        """A topic's full name (with the session's prefix), e.g. `topic("invoice-posted")`."""
        return topic_name(Topic(topic), self.settings.topic_prefix)

    @property
    def topics(self) -> dict[str, str]:
        """Every topic's base name → its full name on this stack."""
        return {t.value: self.topic(t) for t in Topic}

    def url(self, service: str) -> str:
        """A service's API address."""
        return service_url(self.settings, service)

    def clients(self) -> Services:
        """Typed clients of the three APIs with the roles' tokens (close them after use)."""
        return Services(self.settings)

    # --- faults of processes ---------------------------------------------------------------------

    def stop_service(self, service: str) -> bool:
        """Stop a service (every instance; `finance-2`: that one) with SIGTERM; True if any was
        running."""
        return faults.stop(self.settings, service)

    def kill_service(self, service: str) -> bool:
        """Kill a service (every instance; `finance-2`: that one) with SIGKILL; True if any was
        running."""
        return faults.kill(self.settings, service)

    def start_service(self, service: str) -> None:
        """Start a stopped service and wait until it is healthy (it keeps its address)."""
        faults.start(self.settings, service)

    def restart_service(self, service: str, kill: bool = False) -> None:
        """Stop (or kill) a service and start it again, healthy."""
        faults.restart(self.settings, service, kill_first=kill)

    def service_running(self, service: str) -> bool:
        """Whether the service answers: any of its instances lives."""
        return faults.running(self.settings, service)

    async def restart_broker_empty(self) -> None:
        """The local broker restarted with nothing in it (every event, offset and group gone),
        topics provisioned again. Recover with `DwsimTest.recover_lost_log`."""
        await faults.restart_broker_empty(self.settings)

    def broker_frozen(self) -> Any:
        """`async with stack.broker_frozen():` the broker hangs (SIGSTOP) for the block."""
        return faults.broker_frozen(self.settings)

    def restore(self) -> None:
        """Put back what a fault left down: the broker continued (or started again and its
        topics provisioned), every service running."""
        status = broker.status(self.settings)
        if not status.external:
            if status.pid is not None and status.running:
                # A no-op unless a test left it stopped (SIGSTOP).
                os.kill(status.pid, signal.SIGCONT)
            else:
                broker.start(self.settings)
        for service in SERVICES:
            # Every instance: a fault may have taken down one of several.
            faults.start(self.settings, service)

    @asynccontextmanager
    async def test(self, deadline_s: float = 120) -> AsyncIterator[DwsimTest]:
        """One test's view of the stack; afterwards, the stack as the next test needs it."""
        services = self.clients()
        one = DwsimTest(self, services, deadline_s)
        try:
            yield one
        finally:
            began = time.monotonic()
            try:
                self.restore()
                await provision_async(self.settings)
                await one.restore_maps()
            finally:
                await services.close()
                one.isolation_s += time.monotonic() - began
                self.timings.isolation_s.append(one.isolation_s)


@dataclass(frozen=True)
class LegalEntity:
    """A legal entity of the test's own in Finance."""

    legal_entity_id: str
    accounting_currency: str


@dataclass(frozen=True)
class Customer:
    """A customer (account) in Dataverse, of one legal entity."""

    account_id: str
    name: str
    legal_entity: LegalEntity


@dataclass(frozen=True)
class Invoice:
    """A confirmed proforma invoice of a contract; its id is also its Finance proposal's."""

    invoice_id: str
    contract: Contract


InvoiceRef = Invoice | str


def _invoice_id(invoice: InvoiceRef) -> str:
    return invoice.invoice_id if isinstance(invoice, Invoice) else str(invoice)


class DwsimTest:
    """One test's part of the shared stack: builders, waits, faults, reconciliation."""

    def __init__(self, stack: DwsimStack, services: Services, deadline_s: float) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.services = services
        self.deadline_s = deadline_s
        self.tag = uuid.uuid4().hex[:6].upper()
        self.started_at = datetime.now(UTC)
        self.isolation_s = 0.0
        self._entities: list[LegalEntity] = []
        self._contracts: list[Contract] = []
        self._default: Contract | None = None

    # --- clients and topics ----------------------------------------------------------------------

    @property
    def dataverse(self) -> ApiClient:
        """Dataverse's API as the project manager."""
        return self.services.dataverse

    @property
    def finance(self) -> ApiClient:
        """Finance's API as the project accountant (post proposals with `post_invoice`)."""
        return self.services.finance

    @property
    def bridge(self) -> ApiClient:
        """The bridge's admin API as the administrator."""
        return self.services.bridge

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address, for the user's own Kafka clients."""
        return self.stack.bootstrap_servers

    def topic(self, topic: Topic | str) -> str:
        """A topic's full name on this stack."""
        return self.stack.topic(topic)

    # --- builders: the business story ------------------------------------------------------------

    async def legal_entity(
        self,
        currency: str = "USD",
        rates: Mapping[str, Decimal | str] | None = None,
        fiscal_years: Iterable[int] | None = None,
        line_properties: Mapping[str, str] | None = None,
    ) -> LegalEntity:
        """A legal entity of this test's own (id `T<tag><n>`), with its accounting currency,
        the open periods of `fiscal_years` (default: this year's), and a rate to its currency
        from each currency in `rates` (e.g. `{"EUR": "1.0850"}`)."""
        began = time.monotonic()
        entity = LegalEntity(f"T{self.tag}{len(self._entities) + 1}", currency)
        await set_up_legal_entity(
            self.services,
            entity.legal_entity_id,
            currency,
            fiscal_years or (date.today().year,),
            {k: Decimal(str(v)) for k, v in (rates or {}).items()},
            line_properties=line_properties,
        )
        self._entities.append(entity)
        # The isolation's own cost: a legal entity per test instead of a shared one.
        self.isolation_s += time.monotonic() - began
        return entity

    async def close_period(self, entity: LegalEntity, period: str, closed: bool = True) -> None:
        """Close (or reopen) a fiscal period, `YYYY-MM`, of the legal entity."""
        await self.finance.call(
            "PUT",
            f"/legal-entities/{entity.legal_entity_id}/fiscal-periods/{period}",
            {"closed": closed},
        )

    async def customer(self, entity: LegalEntity, name: str = "Contoso") -> Customer:
        """A customer of the legal entity in Dataverse."""
        account_id = await create_customer(self.services, name, entity.legal_entity_id)
        return Customer(account_id, name, entity)

    async def _contract(
        self,
        customer: Customer,
        billing_method: str,
        currency: str | None,
        milestones: Iterable[Decimal | str] = (),
    ) -> Contract:
        plan = ContractPlan(
            len(self._contracts) + 1,
            customer.legal_entity.legal_entity_id,
            currency or customer.legal_entity.accounting_currency,
            customer.name,
            billing_method,
            milestones=tuple(Decimal(str(m)) for m in milestones),
        )
        contract = await create_contract(self.services, plan, customer.account_id, date.today())
        self._contracts.append(contract)
        return contract

    async def time_and_material_contract(
        self, customer: Customer, currency: str | None = None
    ) -> Contract:
        """A time-and-material contract (in the legal entity's currency unless given)."""
        return await self._contract(customer, "time_and_material", currency)

    async def fixed_price_contract(
        self,
        customer: Customer,
        milestones: Iterable[Decimal | str] = ("5000",),
        currency: str | None = None,
    ) -> Contract:
        """A fixed-price contract whose milestones are ready to invoice."""
        return await self._contract(customer, "fixed_price", currency, milestones)

    async def add_milestone(self, contract: Contract, amount: Decimal | str) -> str:
        """One more milestone on a fixed-price contract, ready to invoice."""
        return await add_milestone(
            self.services, contract, Decimal(str(amount)), date.today(), "Milestone"
        )

    async def approve_time(
        self,
        contract: Contract,
        hours: Decimal | str | int = 8,
        billable_hours: Decimal | str | int | None = None,
        role: str = "Developer",
        resource: str = "Ana Silva",
        cost_rate: Decimal | str = "100",
        bill_rate: Decimal | str = "200",
        on: date | None = None,
    ) -> list[Json]:
        """An approved time entry (the approver may cut or raise the billable hours); its
        chargeable unbilled sales are ready to invoice. Returns the actuals it made."""
        billable = hours if billable_hours is None else billable_hours
        entry = EntryPlan(
            "time",
            Decimal(str(hours)),
            Decimal(str(billable)),
            Decimal(str(cost_rate)),
            Decimal(str(bill_rate)),
            resource,
            role,
            on or date.today(),
        )
        return await approve_entry(self.services, contract, entry)

    async def approve_expense(
        self, contract: Contract, amount: Decimal | str, resource: str = "Ana Silva"
    ) -> list[Json]:
        """An approved expense, billed at cost; ready to invoice."""
        value = Decimal(str(amount))
        entry = EntryPlan(
            "expense", Decimal(1), Decimal(1), value, value, resource, "Consultant", date.today()
        )
        return await approve_entry(self.services, contract, entry)

    async def confirmed_invoice(
        self,
        contract: Contract | None = None,
        quantity_edits: Mapping[int, Decimal | str] | None = None,
    ) -> Invoice:
        """A proforma invoice of everything ready on the contract, confirmed (the planned
        edits of detail quantities applied first).

        Without a contract: the shortest whole story, a legal entity in USD, a customer, a
        time-and-material contract and 8 approved hours at 200.
        """
        if contract is None:
            if self._default is None:
                entity = await self.legal_entity()
                self._default = await self.time_and_material_contract(await self.customer(entity))
            contract = self._default
            await self.approve_time(contract)
        edits = {k: Decimal(str(v)) for k, v in (quantity_edits or {}).items()}
        invoice_id = await confirm_invoice(self.services, contract.contract_id, date.today(), edits)
        return Invoice(invoice_id, contract)

    # --- the accountant and the clerk ------------------------------------------------------------

    async def post_journals(self) -> None:
        """Post this test's legal entities' integration journals (unbilled sales must be
        journal-posted before a time-and-material proposal gets its lines)."""
        for entity in self._entities:
            await self.finance.post("/journals/post", {"legal_entity": entity.legal_entity_id})

    async def until_lines(self, invoice: InvoiceRef, deadline_s: float | None = None) -> Json:
        """Run import from staging and post journals until the proposal has its lines;
        returns the proposal."""
        iid = _invoice_id(invoice)
        seen: list[str] = []

        async def with_lines() -> Json:
            await self.finance.post("/import", {})
            await self.post_journals()
            try:
                proposal = await self.finance.get(f"/proposals/{iid}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                seen.append("no proposal in Finance yet")
                return None
            seen.append(str(proposal.get("waiting_reason") or proposal.get("status")))
            return proposal if proposal.get("lines") else None

        return await until(
            with_lines,
            f"proposal {iid} to get its lines",
            deadline_s or self.deadline_s,
            poll_s=0.5,
            last_seen=lambda: seen[-1] if seen else "nothing",
        )

    async def post_invoice(self, invoice: InvoiceRef, deadline_s: float | None = None) -> Json:
        """Drive the invoice to a posted customer invoice: proposal lines (import, journals),
        then the receivables clerk posts it. Returns the customer invoice."""
        iid = _invoice_id(invoice)
        await self.until_lines(iid, deadline_s)
        await self.finance.post(f"/proposals/{iid}/post", token=self.services.clerk_token)
        return await self.until_posted(iid, deadline_s)

    async def until_posted(self, invoice: InvoiceRef, deadline_s: float | None = None) -> Json:
        """Wait until Finance holds the posted customer invoice and its accounting detail is
        back on the invoice's billed-sales actuals in Dataverse; returns the customer invoice
        (invoice number, voucher, amounts)."""
        iid = _invoice_id(invoice)
        seen: list[str] = []

        async def posted() -> Json:
            try:
                proposal = await self.finance.get(f"/proposals/{iid}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                seen.append("no proposal in Finance yet")
                return None
            number = proposal.get("invoice_number")
            if proposal.get("status") != "posted" or not number:
                seen.append(f"proposal {proposal.get('status')}")
                return None
            billed = await self.dataverse.get(
                "/actuals", invoice_id=iid, transaction_type="billed_sales"
            )
            if not billed or not all(a.get("voucher") for a in billed):
                seen.append("posted; accounting detail not back in Dataverse yet")
                return None
            return await self.finance.get(f"/customer-invoices/{number}")

        return await until(
            posted,
            f"invoice {iid} posted with its accounting detail back",
            deadline_s or self.deadline_s,
            last_seen=lambda: seen[-1] if seen else "nothing",
        )

    async def until_event(
        self,
        topic: Topic | str,
        key: InvoiceRef,
        where: Callable[[dict[str, Any]], bool] | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """The first event on a topic (base name, e.g. "invoice-posted") with this key (an
        invoice or its id), read from the broker; waits for it until the deadline."""
        return await wait_for_event(
            self.settings,
            self.topic(topic),
            _invoice_id(key),
            deadline_s or self.deadline_s,
            where,
        )

    # --- faults ----------------------------------------------------------------------------------

    def stop_service(self, service: str) -> bool:
        """Stop a service (SIGTERM); it is started again after the test if still down."""
        return self.stack.stop_service(service)

    def kill_service(self, service: str) -> bool:
        """Kill a service (SIGKILL); it is started again after the test if still down."""
        return self.stack.kill_service(service)

    def start_service(self, service: str) -> None:
        """Start a stopped service and wait until it is healthy."""
        self.stack.start_service(service)

    def restart_service(self, service: str, kill: bool = False) -> None:
        """Stop (or kill) a service and start it again."""
        self.stack.restart_service(service, kill)

    async def restart_broker_empty(self) -> None:
        """The broker restarted empty; see `recover_lost_log` for the operator's recovery."""
        await self.stack.restart_broker_empty()

    async def recover_lost_log(self, since: datetime | None = None) -> dict[str, int]:
        """The operator's recovery after the broker lost its log: every service's consumer
        reads the new log from its beginning, then every service publishes again its events
        since `since` (default: this test's start); returns how many each replayed."""
        return await faults.recover_lost_log(self.services, since or self.started_at)

    async def rewind_consumers(self) -> dict[str, list[str]]:
        """Every service's consumer reads its partitions again from their beginning."""
        return await faults.rewind_consumers(self.services)

    async def replay_outboxes(self, since: datetime | None = None) -> dict[str, int]:
        """Each service publishes again its events since `since` (default: this test's
        start); returns how many each replayed."""
        return await faults.replay_outboxes(self.services, since or self.started_at)

    def broker_frozen(self) -> Any:
        """`async with dwsim.broker_frozen():` the broker hangs (SIGSTOP) for the block."""
        return self.stack.broker_frozen()

    async def pause_map(self, table_map: str = "invoices") -> str:
        """Pause a table map ('invoices' or 'actuals'): changes queue in order."""
        return await faults.pause_map(self.services, table_map)

    async def resume_map(self, table_map: str = "invoices") -> str:
        """Resume a paused map and wait until it runs again (its queue replayed)."""
        return await faults.resume_map(self.services, table_map, self.deadline_s)

    async def stop_map(self, table_map: str = "invoices") -> str:
        """Stop a map: nothing syncs until it is run again."""
        return await faults.stop_map(self.services, table_map)

    async def run_map(self, table_map: str = "invoices") -> str:
        """Run a stopped map and wait until it is running."""
        return await faults.run_map(self.services, table_map, self.deadline_s)

    async def map_state(self, table_map: str = "invoices") -> str:
        """A map's state."""
        return await faults.map_state(self.services, table_map)

    async def until_queued(self, n: int, table_map: str = "invoices") -> int:
        """Wait until the paused map holds at least `n` records in its queue."""
        return await faults.wait_queued(self.services, table_map, n, self.deadline_s)

    async def restore_maps(self) -> None:
        """After the test: every map running again (resumed when paused, run when stopped)."""
        for table_map in faults.MAPS:
            state = await faults.map_state(self.services, table_map)
            if state == "paused":
                await faults.resume_map(self.services, table_map, self.deadline_s)
            elif state == "not_running":
                await faults.run_map(self.services, table_map, self.deadline_s)

    # --- reconciliation --------------------------------------------------------------------------

    async def reconcile(self) -> Report:
        """Reconcile this test's own records (its legal entities' contracts and projects)."""
        began = time.monotonic()
        report = Report(0, 0)
        for entity in self._entities:
            contracts = [c for c in self._contracts if c.legal_entity == entity.legal_entity_id]
            snapshot = await fetch_snapshot_of(
                self.services,
                entity.legal_entity_id,
                [c.contract_id for c in contracts],
                sorted({c.project_id for c in contracts}),
            )
            part = reconcile(snapshot)
            report.invoices += part.invoices
            report.proposals += part.proposals
            report.differences += part.differences
            report.invoice_ids += part.invoice_ids
            report.compared = _add_counts(report.compared, part.compared)
        self.stack.timings.reconcile_s.append(time.monotonic() - began)
        return report

    async def assert_reconciled(self, allow_explained: bool = False) -> Report:
        """Fail unless Dataverse and Finance agree on this test's records; the failure lists
        every difference with its cause. With `allow_explained`, only differences without a
        known cause fail (e.g. while a map is paused on purpose)."""
        report = await self.reconcile()
        failing = report.unexplained if allow_explained else report.differences
        if failing:
            lines = [
                f"- {d.kind} (invoice {d.invoice_id or '—'}, actual {d.actual_id or '—'}): "
                f"{d.cause}" + ("" if d.explained else " [no known cause]")
                for d in failing
            ]
            raise NotReconciled(
                f"Dataverse and Finance differ on this test's records: {len(failing)} "
                f"difference(s) over {report.invoices} confirmed invoices\n"
                + "\n".join(lines)
                + f"\ncompared: {report.summary()}"
            )
        return report


def _add_counts(total: list[Comparison], part: list[Comparison]) -> list[Comparison]:
    """Sum two reports' comparison counts, kind by kind."""
    if not total:
        return list(part)
    counts = {c.what: c.count for c in total}
    return [replace(c, count=counts.get(c.what, 0) + c.count) for c in part]
