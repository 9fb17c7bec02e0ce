"""`python -m infra up|down|status`: the local broker and PostgreSQL that dwsim runs on."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from infra import broker, postgres, tokens, topics
from infra.errors import InfraError
from services.common.settings import Settings

app = typer.Typer(
    help=(
        "Local infrastructure of dwsim: a Kafka-protocol broker (Tansu, memory storage) and "
        "PostgreSQL (embedded), both on 127.0.0.1. Set DWSIM_KAFKA_BOOTSTRAP or "
        "DWSIM_DATABASE_URL to use servers of your own instead; nothing local is started then."
    ),
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.command()
def up() -> None:
    """Start the broker and PostgreSQL (if not running), create roles, databases and topics."""
    settings = Settings()
    for line in tokens.describe_new_tokens(settings, tokens.ensure_tokens(settings)):
        console.print(line, soft_wrap=True, highlight=False)
    try:
        b = broker.start(settings)
        p = postgres.start(settings)
        created = topics.provision(settings)
    except InfraError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"broker     {b.bootstrap}" + (" (external)" if b.external else ""))
    console.print(f"postgres   {p.url}" + (" (external)" if p.external else ""))
    console.print(f"topics     {len(created)} created, prefix {settings.topic_prefix!r}")


@app.command()
def down() -> None:
    """Stop what `up` started (never an external server)."""
    settings = Settings()
    stopped = [
        name for name, fn in (("postgres", postgres.stop), ("broker", broker.stop)) if fn(settings)
    ]
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show whether the broker and PostgreSQL are up, and where."""
    settings = Settings()
    b = broker.status(settings)
    p = postgres.status(settings)
    if as_json:
        typer.echo(json.dumps({"broker": b.__dict__, "postgres": p.__dict__}))
    else:
        table = Table("server", "state", "address", "pid")
        for name, st, addr in (("broker", b, b.bootstrap), ("postgres", p, p.url)):
            state = "external" if st.external else ("up" if st.running else "down")
            table.add_row(name, state, addr or "-", str(st.pid or "-"))
        console.print(table)
    if not (b.running and p.running):
        raise typer.Exit(3)


if __name__ == "__main__":
    app()
