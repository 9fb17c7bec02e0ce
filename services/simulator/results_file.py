"""Where `dwsim bench`, `chaos` and `soak` keep their figures: one JSON file per run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.settings import get_settings, results_folder


def new_results_path(kind: str) -> Path:
    """`<kind>/results/<time>.json` of the clone (installed: under the home), its folder made."""
    folder = results_folder(kind, get_settings().home)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"


def save_figures(figures: dict[str, Any], path: Path) -> Path:
    """Write a run's figures to `path` (again after each step of a long run: a run that is
    stopped keeps what it measured)."""
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return path
