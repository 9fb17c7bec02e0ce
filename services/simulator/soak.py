"""`dwsim soak` (what `make soak` runs): bounded storage, shown by the databases themselves.

Rounds of the whole invoice cycle (the bench's `pipeline_throughput`: contracts, approvals,
staging, journals posted, confirmation, proposal lines, posting, accounting back) run on a
stack of their own with short retention settings, so that a run of minutes covers many
retention windows. After every round each service's database is read directly (the checker's
read-only role, never the services' own report): the rows of what retention prunes (published
outbox rows, inbox event ids, the bridge's activity log, synced records' payloads), each table's
size on disk and each database's size.

Business tables (actuals, staging, journals, proposals, vouchers, ledger, the bridge's records
themselves) grow with every invoice by design: they are the product's data, reported apart and
not judged.

The verdict, per pruned table: rows are written at the run's average rate (`written`, the
table's inserts as PostgreSQL counts them); a row is pruned once it is older than its retention,
at the next pruning pass. So at any reading the table holds at most what was written during one
retention, one pruning interval and one round (the flow comes in bursts of a round, not evenly):

    bound = rate written × (retention + retention interval + longest round)

Levelled off: in each of the last third of the rounds, every pruned table holds no more than
its bound (a table the rounds wrote nothing into, the activity log of a healthy run, is not
judged). Such a round is judged only once more rows were written than the bound (before that,
an unpruned table would pass too); a run too short for that ends as a failure of the run, not a
pass.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from infra import postgres
from infra.errors import InfraError
from services.common.errors import DwsimError
from services.common.settings import SERVICES, Settings
from services.simulator.bench import Workload, pipeline_throughput
from services.simulator.clients import ApiError, Services
from services.simulator.processes import ServiceStartFailed
from services.simulator.stack import running_stack, start_afresh


@dataclass(frozen=True)
class SoakSizes:
    """Volumes of one soak."""

    # 24 rounds of 5 invoices × 5 lines: about two minutes on 2 cores (a round took 3.5-7.3 s),
    # ten outbox retentions and five inbox ones, and two of PostgreSQL's autovacuum minutes.
    rounds: int = 24
    invoices: int = 5
    lines: int = 5


@dataclass(frozen=True)
class SoakRetention:
    """The retention settings the soak's stack runs with (every one printed and stored).

    Short, so that a run of minutes holds many retentions: a round of the default sizes took
    3.6-5.8 s on 2 cores, so 10 s is two to three rounds and the inbox's 20 s four to five. The
    inbox keeps its ids twice as long, as the services require (`inbox_retention_s >=
    retention_s`) and as production does (7 days against 1). Pruning every second keeps a row's
    overstay small next to its retention. A first run with 20 s / 40 s / 2 s and 12 rounds was
    too short to tell for the inboxes: their bound (40 + 2 + a round ≈ 48 s of writes) was
    still more than the judged rounds had written.
    """

    retention_s: float = 10.0
    inbox_retention_s: float = 20.0
    retention_interval_s: float = 1.0


@dataclass(frozen=True)
class PrunedKind:
    """One kind of row retention prunes: in which service's table, after which retention
    (the name of a `SoakRetention` field)."""

    service: str
    table: str
    retention: str

    @property
    def key(self) -> str:
        """How the figures name it: `service.table` (the payloads: `.payload` added)."""
        suffix = ".payload" if self.table == "bridge_record" else ""
        return f"{self.service}.{self.table}{suffix}"


PRUNED: tuple[PrunedKind, ...] = (
    *(
        PrunedKind(service, table, setting)
        for service in SERVICES
        for table, setting in (
            ("dwsim_outbox", "retention_s"),
            ("dwsim_inbox", "inbox_retention_s"),
        )
    ),
    PrunedKind("bridge", "bridge_activity", "retention_s"),
    # A synced record's payload is set to NULL, the record kept: the rows counted are the
    # records that still carry one, their bytes the payloads' own.
    PrunedKind("bridge", "bridge_record", "retention_s"),
)
PAYLOADS = "bridge.bridge_record.payload"


@dataclass
class PrunedReading:
    """One pruned table at one reading."""

    rows: int
    # Rows ever inserted (PostgreSQL's statistics; for payloads, the bridge's records).
    written: int
    bytes: int


@dataclass
class RoundReading:
    """Everything read from the databases after one round (round 0: before the first)."""

    round: int
    invoices: int
    at_s: float
    round_s: float
    pruned: dict[str, PrunedReading]
    # Every other table: the product's data, growing by design. {key: {"rows", "bytes"}}
    kept: dict[str, dict[str, int]]
    database_bytes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        """The three databases' size together."""
        return sum(self.database_bytes.values())


@dataclass
class TableVerdict:
    """Whether one pruned table levelled off over the judged rounds."""

    table: str
    retention_s: float
    written_per_s: float
    bound_rows: int
    rows_first_rounds: list[int]
    rows_last_rounds: list[int]
    judged_rounds: list[int]
    # None when the rounds wrote nothing into it (the activity log of a healthy run): nothing
    # to judge, neither a pass nor a failure.
    levelled: bool | None
    too_short: bool = False


@dataclass
class SoakResults:
    """The whole run, as stored in soak/results/<time>.json."""

    started_at: str
    sizes: SoakSizes
    retention: SoakRetention
    # Every retention setting the stack ran with, the two left at their default included.
    retention_settings: dict[str, float]
    readings: list[RoundReading] = field(default_factory=list)
    # Read once more after the rounds, the flow idle for one inbox retention and two pruning
    # intervals: what retention leaves when nothing new comes (not part of the verdict).
    after_idle: RoundReading | None = None
    idle_s: float = 0.0
    verdicts: list[TableVerdict] = field(default_factory=list)
    # Bytes on disk added per invoice over the first and the last third of the rounds: the
    # databases, the pruned tables (outbox, inbox, activity log) and every other table.
    bytes_per_invoice: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None

    @property
    def levelled(self) -> bool:
        """Every pruned table within its bound in every judged round."""
        return bool(self.verdicts) and all(v.levelled is not False for v in self.verdicts)

    @property
    def too_short(self) -> bool:
        """Some table could not be judged: the rounds did not outlast its bound."""
        return any(v.too_short for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        """The figures with the verdict, for the JSON file."""
        return {**asdict(self), "levelled": self.levelled, "too_short": self.too_short}


def soak_settings(base: Settings, retention: SoakRetention) -> Settings:
    """A stack of the soak's own (home, topics, groups, databases, roles) with its retention."""
    return base.model_copy(
        update={
            "home": base.home / "soak",
            "topic_prefix": f"{base.topic_prefix}soak-",
            "database_prefix": f"{base.database_prefix}soak_",
            **{f"{service}_database_url": None for service in SERVICES},
            **asdict(retention),
        }
    )


# --- reading the databases -------------------------------------------------------------------


async def read_databases(
    settings: Settings, round_no: int, invoices: int, at_s: float, round_s: float
) -> RoundReading:
    """Rows and sizes of every table of every service database, read as the checker role."""
    pruned: dict[str, PrunedReading] = {}
    kept: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    for service in SERVICES:
        conn = await asyncpg.connect(postgres.checker_database_url(settings, service), timeout=30)
        try:
            sizes[service] = await conn.fetchval("SELECT pg_database_size(current_database())")
            tables = await conn.fetch(
                "SELECT relname, n_tup_ins, pg_total_relation_size(relid) AS bytes"
                " FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY relname"
            )
            by_name = {t["relname"]: t for t in tables}
            for kind in PRUNED:
                if kind.service != service or kind.key == PAYLOADS:
                    continue
                table = kind.table
                rows = await conn.fetchval(
                    f"SELECT count(*) FROM {postgres.quoted_identifier(table)}"
                )
                # The statistics reach the view a little after the inserts' commit (each
                # backend reports at most every second, an idle one within seconds): a table
                # cannot hold more rows than were ever written into it.
                written = max(rows, by_name[table]["n_tup_ins"])
                pruned[kind.key] = PrunedReading(rows, written, by_name[table]["bytes"])
            if service == "bridge":
                row = await conn.fetchrow(
                    "SELECT count(*) AS records, count(payload) AS with_payload,"
                    " coalesce(sum(pg_column_size(payload)), 0) AS payload_bytes"
                    " FROM bridge_record"
                )
                assert row is not None
                pruned[PAYLOADS] = PrunedReading(
                    row["with_payload"], row["records"], int(row["payload_bytes"])
                )
            own = {kind.table for kind in PRUNED if kind.service == service}
            for name, t in by_name.items():
                if name in own and name != "bridge_record":
                    continue
                rows = await conn.fetchval(
                    f"SELECT count(*) FROM {postgres.quoted_identifier(name)}"
                )
                kept[f"{service}.{name}"] = {"rows": rows, "bytes": t["bytes"]}
        finally:
            await conn.close()
    return RoundReading(round_no, invoices, round(at_s, 1), round(round_s, 1), pruned, kept, sizes)


# --- the verdict ---------------------------------------------------------------------------------


def judge(readings: list[RoundReading], retention: SoakRetention) -> list[TableVerdict]:
    """Each pruned table against its bound over the last third of the rounds (at least two).

    `readings[0]` is the reading before the first round; the rate written is taken over the
    whole run, from it to the last reading."""
    rounds = readings[1:]
    if len(rounds) < 2:
        return []
    last = readings[-1]
    span_s = last.at_s - readings[0].at_s
    longest_round_s = max(r.round_s for r in rounds)
    judged = rounds[-max(2, math.ceil(len(rounds) / 3)) :]
    first = rounds[: len(judged)]
    verdicts = []
    for kind in PRUNED:
        key = kind.key
        retention_s = getattr(retention, kind.retention)
        written = last.pruned[key].written - readings[0].pruned[key].written
        written_per_s = written / span_s
        window_s = retention_s + retention.retention_interval_s + longest_round_s
        bound = math.ceil(written_per_s * window_s)
        # A round can tell only once more was written than the bound: before, an unpruned
        # table would stay within it too.
        too_short = written > 0 and any(r.pruned[key].written <= bound for r in judged)
        levelled = all(r.pruned[key].rows <= bound for r in judged) and not too_short
        verdicts.append(
            TableVerdict(
                table=key,
                retention_s=retention_s,
                written_per_s=round(written_per_s, 2),
                bound_rows=bound,
                rows_first_rounds=[r.pruned[key].rows for r in first],
                rows_last_rounds=[r.pruned[key].rows for r in judged],
                judged_rounds=[r.round for r in judged],
                levelled=levelled if written > 0 else None,
                too_short=too_short,
            )
        )
    return verdicts


def pruned_table_bytes(reading: RoundReading) -> int:
    """Bytes on disk of the tables retention deletes from (the payloads live in the bridge's
    records, a kept table)."""
    return sum(p.bytes for key, p in reading.pruned.items() if key != PAYLOADS)


def kept_table_bytes(reading: RoundReading) -> int:
    """Bytes on disk of every other table: the product's data."""
    return sum(t["bytes"] for t in reading.kept.values())


def bytes_per_invoice(readings: list[RoundReading]) -> dict[str, dict[str, float]]:
    """Bytes on disk added per invoice over the first third of the rounds and over the last
    third: the three databases together, the pruned tables, the kept ones.

    Deleted rows free their space for reuse only once (auto)vacuum has passed (PostgreSQL's
    default: a look at each database every minute), so the pruned tables' bytes lag their rows.
    """
    rounds = len(readings) - 1
    if rounds < 2:
        return {}
    third = max(1, rounds // 3)
    first, last = (readings[0], readings[third]), (readings[-1 - third], readings[-1])
    measures: dict[str, Callable[[RoundReading], int]] = {
        "databases": lambda r: r.total_bytes,
        "pruned_tables": pruned_table_bytes,
        "kept_tables": kept_table_bytes,
    }

    def growth(
        span: tuple[RoundReading, RoundReading], size: Callable[[RoundReading], int]
    ) -> float:
        start, end = span
        return round((size(end) - size(start)) / (end.invoices - start.invoices), 1)

    return {
        name: {"first_rounds": growth(first, size), "last_rounds": growth(last, size)}
        for name, size in measures.items()
    }


# --- the run -----------------------------------------------------------------------------------


async def _soak(
    settings: Settings, sizes: SoakSizes, results: SoakResults, progress: Console
) -> None:
    services = Services(settings)
    try:
        work = Workload(services)
        await work.setup()
        # Grants on the tables the migrations created (as the chaos checker does before
        # reading): what lets the read-only role read them on any server.
        await postgres.provision_async(settings)
        began = time.monotonic()
        results.readings.append(await read_databases(settings, 0, 0, 0.0, 0.0))
        for n in range(1, sizes.rounds + 1):
            started = time.monotonic()
            await pipeline_throughput(work, settings, sizes.invoices, sizes.lines)
            ended = time.monotonic()
            reading = await read_databases(
                settings, n, n * sizes.invoices, ended - began, ended - started
            )
            results.readings.append(reading)
            progress.print(f"  round {n} of {sizes.rounds}: {_round_line(reading)}")
        retention = results.retention
        results.idle_s = retention.inbox_retention_s + 2 * retention.retention_interval_s
        progress.print(f"  idle for {results.idle_s:g} s, then read once more…")
        # A pause of set length, not a wait on a condition: what is left after it is the
        # measurement (each pruned kind should be down to what the idle flow writes).
        await asyncio.sleep(results.idle_s)
        idle = await read_databases(
            settings, sizes.rounds + 1, sizes.rounds * sizes.invoices, time.monotonic() - began, 0
        )
        results.after_idle = idle
        progress.print(f"  after idling: {_round_line(idle)}")
    finally:
        await services.close()


def _round_line(r: RoundReading) -> str:
    pruned = sum(p.rows for p in r.pruned.values())
    return (
        f"{r.round_s:.1f} s, pruned tables hold {pruned:,} rows, "
        f"databases {r.total_bytes / 1e6:.2f} MB"
    )


def run_soak(
    base: Settings, sizes: SoakSizes, retention: SoakRetention, progress: Console
) -> dict[str, Any]:
    """The soak on a stack of its own started on empty databases; its figures and verdict.

    A failure of the run (a service not starting, a wait past its deadline) is stored as its
    `error` with the rounds read so far."""
    own = soak_settings(base, retention)
    used = {
        name: getattr(own, name)
        for name in (*asdict(retention), "retention_batch_rows", "retention_pause_s")
    }
    results = SoakResults(datetime.now(UTC).isoformat(), sizes, retention, used)
    progress.print(
        f"soak: {sizes.rounds} rounds × {sizes.invoices} invoices × {sizes.lines} lines; "
        f"settings: {', '.join(f'{k}={v:g}' for k, v in used.items())}"
    )
    try:
        start_afresh(own)
        with running_stack(own):
            asyncio.run(_soak(own, sizes, results, progress))
    except (
        DwsimError,
        InfraError,
        ServiceStartFailed,
        ApiError,
        httpx.HTTPError,
        TimeoutError,
        OSError,
        asyncpg.PostgresError,
    ) as exc:
        # Exit 2 with what was read so far, never a traceback that exits 1 ("not levelled").
        results.error = f"{type(exc).__name__}: {exc}"
    results.verdicts = judge(results.readings, retention)
    results.bytes_per_invoice = bytes_per_invoice(results.readings)
    return results.to_json()


def exit_code(figures: dict[str, Any]) -> int:
    """0 levelled off, 1 not, 2 when the run failed or was too short to tell."""
    if figures["error"] is not None or figures["too_short"] or not figures["verdicts"]:
        return 2
    return 0 if figures["levelled"] else 1


def print_results(console: Console, figures: dict[str, Any]) -> None:
    """A row per round (pruned tables' rows, the kept data, sizes), then the verdicts."""
    keys = [kind.key for kind in PRUNED]
    table = Table(title="dwsim soak: rows of what retention prunes, after each round")
    for column in ("round", "inv.", "at s", *(_short(k) for k in keys), "kept rows", "MB"):
        table.add_column(column, justify="right")
    idle = figures["after_idle"]
    for r in [*figures["readings"], *([idle] if idle else [])]:
        kept_rows = sum(t["rows"] for t in r["kept"].values())
        table.add_row(
            "idle" if r is idle else str(r["round"]),
            str(r["invoices"]),
            f"{r['at_s']:.0f}",
            *(f"{r['pruned'][k]['rows']:,}" for k in keys),
            f"{kept_rows:,}",
            f"{sum(r['database_bytes'].values()) / 1e6:.2f}",
        )
    console.print(table)
    console.print(
        "MB: the three databases' size together. kept rows: the product's data (actuals, "
        "staging, journals, proposals, ledger, bridge records…), growing with every invoice "
        "by design; not judged. idle: read again after the flow stood still for "
        f"{figures['idle_s']:g} s"
    )
    verdicts = Table(title="levelled off? rows in the last rounds against the bound")
    for column in ("table", "retention s", "written/s", "bound", "first rounds", "last rounds"):
        verdicts.add_column(column)
    verdicts.add_column("levelled")
    for v in figures["verdicts"]:
        shown = {True: "yes", False: "[red]no[/red]", None: "nothing written"}[v["levelled"]]
        if v["too_short"]:
            shown = "too short to tell"
        verdicts.add_row(
            _short(v["table"]),
            f"{v['retention_s']:g}",
            f"{v['written_per_s']:g}",
            f"{v['bound_rows']:,}",
            ", ".join(f"{n:,}" for n in v["rows_first_rounds"]),
            ", ".join(f"{n:,}" for n in v["rows_last_rounds"]),
            shown,
        )
    console.print(verdicts)
    for name, growth in figures["bytes_per_invoice"].items():
        console.print(
            f"{name.replace('_', ' ')}: {growth['first_rounds']:,.0f} bytes added per invoice "
            f"over the first third of the rounds, {growth['last_rounds']:,.0f} over the last"
        )
    console.print(
        "bound: rows written per second over the run × (the table's retention + the pruning "
        "interval + the longest round); judged: the last third of the rounds"
    )
    if figures["error"]:
        console.print(f"[red]the run failed:[/red] {figures['error']}")
    elif figures["too_short"]:
        console.print("[red]too short to tell:[/red] more rounds, or a shorter retention")
    elif figures["levelled"]:
        console.print("[green]levelled off[/green]: every pruned table within its bound")
    else:
        console.print("[red]not levelled off[/red]: a pruned table outgrew its bound")


# Column headings narrow enough for an 80-column terminal.
SHORT = {
    "dataverse.dwsim_outbox": "dv outbox",
    "dataverse.dwsim_inbox": "dv inbox",
    "finance.dwsim_outbox": "fin outbox",
    "finance.dwsim_inbox": "fin inbox",
    "bridge.dwsim_outbox": "br outbox",
    "bridge.dwsim_inbox": "br inbox",
    "bridge.bridge_activity": "activity",
    PAYLOADS: "payloads",
}


def _short(key: str) -> str:
    return SHORT.get(key, key)
