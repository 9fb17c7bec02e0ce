"""`dwsim`: run, break and inspect the Project Operations invoice integration locally."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from infra import broker, postgres, topics
from infra.cli import down as infra_down
from infra.cli import status as infra_status
from infra.cli import up as infra_up
from services.common.settings import Settings

app = typer.Typer(
    help=(
        "dwsim simulates the Dynamics 365 Project Operations invoice integration: Dataverse "
        "(project side), Finance (ERP side) and the dual-write bridge, as services talking over "
        "Kafka, each with its own PostgreSQL database.\n\n"
        "Start with `dwsim demo` (what `make demo` runs)."
    ),
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

app.command("up", help="Start the local broker and PostgreSQL.")(infra_up)
app.command("down", help="Stop what `dwsim up` started.")(infra_down)
app.command("status", help="Show the infrastructure's state.")(infra_status)


@app.command()
def demo(
    events: int = typer.Option(200, help="Probe events to send through outbox → inbox."),
) -> None:
    """Run the main job end to end and print a report; exit 0 only if both sides agree.

    Starts the local infrastructure if it is not running (and stops it again after).
    """
    from services.simulator.roundtrip import run_round_trip

    settings = Settings()
    started = not broker.status(settings).running and not settings.kafka_bootstrap
    broker.start(settings)
    postgres.start(settings)
    topics.provision(settings)
    try:
        result = asyncio.run(run_round_trip(settings, events))
    finally:
        if started:
            postgres.stop(settings)
            broker.stop(settings)
    console.print(
        f"round trip: {result.events} events committed in dataverse's outbox, "
        f"{result.applied} applied once in finance's inbox ({result.duplicates} duplicates "
        f"skipped) in {result.seconds:.2f} s, {result.events_per_second:.0f} events/s"
    )
    if result.applied != result.events:
        console.print("[red]events missing: the two sides do not agree[/red]")
        raise typer.Exit(1)
    console.print("[green]both sides agree[/green]")
