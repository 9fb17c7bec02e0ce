"""The console's maps page names the source transactions past Microsoft's limits that `/stats`
counts (docs/bridge.md, "Microsoft's limits"), and says nothing when there are none."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.console.pages import TEMPLATES


def render(counts: dict[str, int]) -> str:
    table_map: dict[str, Any] = {
        "name": "Project invoice proposal V2 (invoices)",
        "slug": "invoices",
        "version": "1.0.0.0",
        "direction": "dataverse_to_finance",
        "state": "running",
        "queue": {"count": 0},
        "counts": counts,
        "open_errors": 0,
        "last_activity": None,
        "actions": [],
    }
    session = SimpleNamespace(may_act=False, role=SimpleNamespace(value="administrator"))
    request = SimpleNamespace(url=SimpleNamespace(path="/maps"))
    return TEMPLATES.env.get_template("maps.html").render(
        maps=[table_map], csrf="-", session=session, request=request
    )


def test_the_maps_page_counts_transactions_that_would_fail_in_production() -> None:
    page = render({"transactions_would_fail_in_production": 2})
    assert (
        "Project invoice proposal V2 (invoices): 2 source transactions would fail in production"
        in page
    )


def test_the_maps_page_counts_transactions_failed_by_the_limits() -> None:
    page = render({"transactions_failed_platform_limits": 1})
    assert "(invoices): 1 source transaction failed by Microsoft's limits" in page


def test_the_maps_page_says_nothing_of_limits_when_none_is_past_them() -> None:
    assert 'data-testid="platform-limits-' not in render({"synced": 5})
