"""Every OpenAPI page fuzzed by schemathesis against the real services, with all its checks.

Dataverse, Finance and the bridge run as processes (`python -m services.<name>`) on the real
broker and PostgreSQL. Schemathesis' own CLI runs against each one's `/openapi.json` with
`--checks all`, a bounded number of examples per operation and a fixed seed; each operation is
called with the token of a role allowed to call it (the roles its security requirement names), so
the fuzzing reaches the operation's own code, not only its 401/403. A run passes when there is no
server error, every status code answered is documented and every answer honours its schema.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import PROJECT_ROOT, Settings
from tests.integration.bridge.bridge_harness import BridgeProcess
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(PROJECT_ROOT / ".venv" / "bin" / "st")
SERVICES = ("dataverse", "finance", "bridge")
# Bounded so that the three runs together stay within ~3 minutes on a 2-core machine.
MAX_EXAMPLES = 15
SEED = 18
RUN_DEADLINE_S = 300


# Finance never creates nor deletes a proposal (the proposal map is one way): a schema-valid
# request gets the documented 405 (PUT: for a proposal that does not exist).
REFUSING_OPERATIONS = {
    "POST /proposals",
    "DELETE /proposals/{proposal_id}",
    "PUT /proposals/{proposal_id}",
}


def config_text(openapi: dict[str, Any], settings: Settings) -> str:
    """A schemathesis config giving each operation behind a role the token of the first role
    its security requirement names, and the per-operation check settings above."""
    lines = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            roles = [
                role
                for need in operation.get("security", [])
                for role in need.get("HTTPBearer", [])
            ]
            section = ["[[operations]]", f"include-name = {json.dumps(name)}"]
            if roles:
                token = getattr(settings, f"token_{roles[0]}")
                section.append(f"headers = {{ Authorization = {json.dumps('Bearer ' + token)} }}")
            if name in REFUSING_OPERATIONS:
                section += [
                    "[operations.checks.positive_data_acceptance]",
                    'expected-statuses = ["2xx", "401", "403", "404", "405", "409"]',
                ]
            if len(section) > 2:
                lines += [*section, ""]
    return "\n".join(lines)


async def fuzz(name: str, url: str, settings: Settings, folder: Path) -> dict[str, Any]:
    """One schemathesis run against a running service; its figures, exit code and output."""
    async with httpx.AsyncClient(base_url=url) as http:
        openapi = (await http.get("/openapi.json")).raise_for_status().json()
    config = folder / "schemathesis.toml"
    report = folder / "report.json"
    await asyncio.to_thread(_write, config, config_text(openapi, settings).encode())
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # NUL is refused with 422 by every route (tests/integration/test_api_refusals.py) but
        # not written into each string's schema, so a schema-valid case must not carry one.
        "--generation-allow-x00",
        "false",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), RUN_DEADLINE_S)
    await asyncio.to_thread(_write, folder / "output.txt", output)
    return {
        "service": name,
        "exit_code": process.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "output": output.decode(errors="replace"),
        "report": await asyncio.to_thread(_read_json, report),
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


async def test_every_openapi_page_survives_fuzzing_with_all_checks(
    settings: Settings, tmp_path: Path
) -> None:
    processes = {
        name: BridgeProcess(settings, tmp_path / f"{name}.log", service=name).start()
        for name in SERVICES
    }
    try:

        async def all_up() -> bool:
            for name, process in processes.items():
                if not process.alive():
                    raise AssertionError(f"{name} exited early:\n{process.tail()}")
            return all([await p.health() is not None for p in processes.values()])

        await wait_for(all_up, deadline_s=60, what="the three services to answer /health")
        runs = await asyncio.gather(
            *(
                fuzz(name, p.url, settings, tmp_path / f"fuzz-{name}")
                for name, p in processes.items()
            )
        )
    finally:
        for process in processes.values():
            process.stop()
    for run in runs:
        report = run["report"] or {}
        cases = report.get("test_cases", {})
        print(
            f"\nschemathesis on {run['service']}: {run['seconds']} s, "
            f"operations {report.get('operations', {}).get('tested')}, "
            f"cases {cases.get('generated')}, failures {cases.get('unique_failures')}, "
            f"seed {SEED}, max examples {MAX_EXAMPLES}"
        )
        if run["exit_code"] != 0:
            print(run["output"][-20000:])
    failed = [run["service"] for run in runs if run["exit_code"] != 0]
    assert not failed, f"schemathesis found failures in {failed} (output above)"
