"""Browser tests of the console in real Chromium (Debian's chromium and chromium-driver),
driven by Selenium pointed at those executables, so nothing is ever downloaded.

One stack per module (`dwsim up` in a home of its own, the flow run for a few invoices by
`dwsim demo`), one browser per module; every page visited is saved as a screenshot under the
test session's temporary folder (and, with DWSIM_TEST_README_IMAGES=1, the two the README
shows under docs/images/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.settings import PROJECT_ROOT, Settings
from tests.e2e.conftest import run_dwsim

INSTALL = "apt-get install -y chromium chromium-driver"
README_IMAGES = PROJECT_ROOT / "docs" / "images"


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and its chromedriver, when both are installed."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@dataclass
class Stack:
    """A running stack of the module's own, and where its console is."""

    home: Path
    settings: Settings
    console_url: str

    def login_link(self) -> str:
        """The console's current one-time login link."""
        state = json.loads((self.home / "services" / "console.json").read_text())
        return str(state["login_url"])

    def dwsim(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `dwsim ARGS` on this stack; fail the test with its output if it fails."""
        done = run_dwsim(self.home, *args, timeout=300)
        assert done.returncode == 0, f"dwsim {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """`dwsim up` in a home of the module's own, the flow run for three invoices; `dwsim down`
    afterwards."""
    if chromium_paths() is None:
        pytest.skip(f"no Chromium with its chromedriver on this machine; install: {INSTALL}")
    home = PROJECT_ROOT / ".dwsim" / "tests" / f"browser-{os.getpid()}-{os.urandom(3).hex()}"
    home.mkdir(parents=True)
    try:
        up = run_dwsim(home, "up", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "/login/once/" in up.stdout, up.stdout
        state = json.loads((home / "services" / "console.json").read_text())
        own = Stack(home, Settings(home=home), state["url"])
        own.dwsim("demo", "--invoices", "3")
        yield own
    finally:
        run_dwsim(home, "down", timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's screenshots go."""
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[object]:
    """Headless Chromium with a fresh profile, nothing in the background that calls out."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths is not None
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
