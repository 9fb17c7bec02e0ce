"""The console in real Chromium (issue 21): log in, open every page, pause and resume a map,
retry an error, find an invoice by a prefix of its id and see both sides, watch the overview's
counts move; each page saved as a screenshot. Assertions read what the page shows."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from services.simulator.clients import Services
from tests.browser.conftest import README_IMAGES, Stack
from tests.e2e.conftest import run_dwsim

pytestmark = pytest.mark.integration
README_SHOTS = {"overview-after": "console-overview.png", "invoice": "console-invoice.png"}


def _shoot(driver: WebDriver, folder: Path, name: str) -> Path:
    """Save the whole page (the window made as tall as the page) as a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1600, max(900, min(int(height) + 200, 3200)))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1600, 1000)
    if name in README_SHOTS and _readme_images_wanted():
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, README_IMAGES / README_SHOTS[name])
    return path


def _readme_images_wanted() -> bool:
    import os

    return os.environ.get("DWSIM_TEST_README_IMAGES") == "1"


def _text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _wait(driver: WebDriver, check: Callable[[WebDriver], Any], what: str, deadline_s: float = 30):
    # While a page is replaced, Chromium may answer with an error about the old document:
    # the condition is asked again until the deadline.
    return WebDriverWait(
        driver, deadline_s, poll_frequency=0.2, ignored_exceptions=(WebDriverException,)
    ).until(check, message=what)


def _submit(driver: WebDriver, button: Any) -> None:
    """Click a form's button and wait until the browser shows the page it leads to: the old
    document carries a mark the new one does not."""
    driver.execute_script("document.documentElement.dataset.left = 'no'")
    button.click()
    _wait(
        driver,
        lambda d: d.execute_script(
            "return document.readyState === 'complete' "
            "&& document.documentElement.dataset.left === undefined"
        ),
        "the page after the form",
    )


def _until_page_shows(
    driver: WebDriver, url: str, check: Callable[[WebDriver], bool], what: str, deadline_s: float
) -> None:
    """Reload `url` until `check` holds, or fail naming `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        driver.get(url)
        if check(driver):
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for the page to show {what}")


def _api(stack: Stack, work: Callable[[Services], Any]) -> Any:
    async def run() -> Any:
        services = Services(stack.settings)
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def logged_in(browser: WebDriver, stack: Stack) -> WebDriver:
    """The browser logged in as the administrator through the login form."""
    browser.get(f"{stack.console_url}/maps")
    assert "/login" in browser.current_url, "a page without a session must ask for a login"
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    _submit(browser, browser.find_element(By.ID, "login"))
    assert "Unknown token" in _text(browser, "#login-failed")
    browser.find_element(By.ID, "token").send_keys(stack.settings.token_administrator)
    _submit(browser, browser.find_element(By.ID, "login"))
    _wait(browser, lambda d: d.find_elements(By.ID, "maps"), "the maps page after login")
    assert _text(browser, "#role") == "administrator"
    return browser


def test_every_page_shows_what_the_services_hold(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    driver.get(f"{url}/maps")
    for slug in ("invoices", "actuals"):
        assert _text(driver, f"#map-{slug} [data-testid=state]") == "running"
        buttons = {b.text for b in driver.find_elements(By.CSS_SELECTOR, f"#map-{slug} button")}
        assert buttons == {"Pause", "Stop"}, buttons  # exactly what running allows
    assert int(_text(driver, "#map-invoices [data-testid=synced]")) >= 3
    _shoot(driver, screenshots, "maps")

    for tab in ("mappings", "activity", "queue", "errors", "alerts"):
        driver.get(f"{url}/maps/actuals?tab={tab}")
        assert "msdyn_actuals" in driver.find_element(By.TAG_NAME, "h1").text
        _shoot(driver, screenshots, f"map-actuals-{tab}")
    driver.get(f"{url}/maps/actuals?tab=mappings")
    assert "billing_type" in _text(driver, "table.mappings")
    driver.get(f"{url}/maps/actuals?tab=activity&kind=state_changed")
    kinds = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#activity .pill")}
    assert kinds == {"state_changed"}, kinds
    driver.get(f"{url}/maps/invoices?tab=queue")
    assert _text(driver, "#queue-count").startswith("0")

    driver.get(f"{url}/reconciliation")
    assert "The sides agree" in _text(driver, "#verdict")
    _shoot(driver, screenshots, "reconciliation")
    csv = driver.execute_script("return fetch('/reconciliation.csv').then(r => r.text())")
    assert csv.splitlines()[0] == "invoice_id,actual_id,kind,cause,explained"

    driver.get(f"{url}/")
    assert _text(driver, "#state-invoices") == "running"
    assert _text(driver, "#open-errors") == "0"
    _shoot(driver, screenshots, "overview")

    # A bad id is a 404 page that says so, never a trace.
    for path in (f"/invoices/{uuid.uuid4()}", "/invoices/not-an-id", "/maps/nope", "/nowhere"):
        driver.get(url + path)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Not found", path
        assert "Traceback" not in driver.page_source
    _shoot(driver, screenshots, "not-found")


def test_find_an_invoice_by_prefix_and_see_both_sides(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    invoices = _api(stack, lambda s: s.dataverse.get("/invoices", status="confirmed"))
    invoice_id = str(invoices[0]["invoice_id"])
    driver.get(f"{url}/invoices")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#invoices tr")) == 1 + len(invoices)
    driver.find_element(By.ID, "q").send_keys(invoice_id[:8])
    _submit(driver, driver.find_element(By.ID, "search"))
    _wait(driver, lambda d: d.find_elements(By.ID, "invoice-id"), "the invoice page")
    assert _text(driver, "#invoice-id") == invoice_id
    dataverse_net = _text(driver, "#dataverse-net")
    assert dataverse_net == _text(driver, "#finance-net")  # e.g. "3,694.00 EUR" on both sides
    assert _text(driver, "#proposal-status") == "posted"
    assert "agree" in _text(driver, "#differences")
    statuses = {
        e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=record-status]")
    }
    assert "synced" in statuses and "failed" not in statuses
    # Its skip-sync reversals leave no bridge record: the page shows them counted.
    reversals = [
        a
        for a in _api(stack, lambda s: s.dataverse.get("/actuals", invoice_id=invoice_id))
        if a["skip_sync"]
    ]
    shown = driver.find_elements(By.CSS_SELECTOR, "#bridge-filtered [data-testid=filtered-rows]")
    assert reversals and sum(int(e.text) for e in shown) == len(reversals)
    assert "-VOU-" in _text(driver, "#voucher")  # e.g. DEMF-VOU-000009: per legal entity
    _shoot(driver, screenshots, "invoice")


def test_pause_and_resume_a_map_from_the_page(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    driver.get(f"{url}/maps")
    _submit(driver, driver.find_element(By.ID, "pause-invoices"))
    _wait(driver, lambda d: d.find_elements(By.ID, "resume-invoices"), "the Resume button")
    assert _text(driver, "#map-invoices [data-testid=state]") == "paused"
    assert "pause → paused" in _text(driver, "[data-testid=notice]")
    assert not driver.find_elements(By.ID, "pause-invoices")  # paused allows resume only
    _shoot(driver, screenshots, "maps-paused")

    # A stale page's button: the bridge refuses, and the page says why (its 409), no trace.
    driver.get(f"{url}/maps/invoices")
    _api(stack, lambda s: s.bridge.post("/maps/invoices/resume"))
    _submit(driver, driver.find_element(By.ID, "resume-invoices"))
    notice = _text(driver, "[data-testid=notice]")
    assert "bridge refused (409)" in notice and "paused" in notice, notice
    _shoot(driver, screenshots, "map-refused")

    _until_page_shows(
        driver,
        f"{url}/maps",
        lambda d: _text(d, "#map-invoices [data-testid=state]") == "running",
        "the invoices map running again",
        30,
    )


def _confirm_invoice_finance_refuses(stack: Stack) -> str:
    """A milestone invoice confirmed for a legal entity Finance does not know: Finance refuses
    its proposal header, the bridge keeps an error. Returns the invoice id."""

    async def work(s: Services) -> str:
        dv = s.dataverse
        account = await dv.post("/accounts", {"name": "Woodgrove", "legal_entity": "ZZUK"})
        project = await dv.post(
            "/projects",
            {
                "name": "Woodgrove rollout",
                "legal_entity": "ZZUK",
                "customer_id": account["account_id"],
            },
        )
        contract = await dv.post(
            "/contracts",
            {
                "name": "Woodgrove fixed price",
                "legal_entity": "ZZUK",
                "customer_id": account["account_id"],
                "currency": "GBP",
                "lines": [
                    {
                        "name": "Rollout",
                        "project_id": project["project_id"],
                        "billing_method": "fixed_price",
                        "bill_rate": "200",
                        "cost_rate": "100",
                    }
                ],
            },
        )
        milestone = await dv.post(
            f"/contracts/{contract['contract_id']}/milestones",
            {
                "contract_line_id": contract["lines"][0]["contract_line_id"],
                "name": "Go-live",
                "amount": "5000",
                "milestone_date": "2026-10-01",
            },
        )
        await dv.post(f"/milestones/{milestone['milestone_id']}/ready")
        invoice = await dv.post(f"/contracts/{contract['contract_id']}/invoices")
        await dv.post(f"/invoices/{invoice['invoice_id']}/confirm")
        return str(invoice["invoice_id"])

    result: str = _api(stack, work)
    return result


def test_retry_an_error_from_the_page(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    invoice_id = _confirm_invoice_finance_refuses(stack)
    errors_page = f"{url}/maps/invoices?tab=errors&status=open"
    _until_page_shows(
        driver,
        errors_page,
        lambda d: "unknown legal entity ZZUK" in _text(d, "#errors"),
        "Finance's refusal in the error queue",
        30,
    )
    assert "open" in {
        e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=error-status]")
    }
    _shoot(driver, screenshots, "map-invoices-errors")
    driver.get(f"{url}/invoices/{invoice_id}")
    assert "failed" in {
        e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid=record-status]")
    }
    assert _text(driver, "#no-proposal")
    _shoot(driver, screenshots, "invoice-refused")

    # Finance's setup fixed, the administrator retries from the page.
    _api(
        stack,
        lambda s: s.finance.call(
            "PUT", "/legal-entities/ZZUK", {"accounting_currency": "GBP", "fiscal_year": 2026}
        ),
    )
    driver.get(errors_page)
    [retry] = driver.find_elements(By.CSS_SELECTOR, "#errors button[id^=retry-]")
    _submit(driver, retry)
    assert "retried" in _text(driver, "[data-testid=notice]")
    _until_page_shows(
        driver,
        f"{url}/maps/invoices?tab=errors",
        lambda d: (
            {e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=error-status]")}
            == {"resolved"}
        ),
        "the error resolved",
        30,
    )
    _until_page_shows(
        driver,
        f"{url}/invoices/{invoice_id}",
        lambda d: bool(d.find_elements(By.ID, "proposal-status")),
        "the proposal in Finance",
        30,
    )


def test_edit_the_alert_rule_from_the_page(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    driver.get(f"{url}/maps/invoices?tab=alerts")
    count = driver.find_element(By.CSS_SELECTOR, "input[id$=-count]")
    rule = count.get_attribute("id").split("-")[1]
    count.clear()
    count.send_keys("5")
    _submit(driver, driver.find_element(By.ID, f"save-rule-{rule}"))
    assert f"alert rule {rule} saved" in _text(driver, "[data-testid=notice]")
    assert driver.find_element(By.ID, f"rule-{rule}-count").get_attribute("value") == "5"

    count = driver.find_element(By.ID, f"rule-{rule}-count")
    count.clear()
    count.send_keys("0")
    _submit(driver, driver.find_element(By.ID, f"save-rule-{rule}"))
    notice = _text(driver, "[data-testid=notice]")
    assert "bridge refused (422)" in notice and "count" in notice, notice
    assert driver.find_element(By.ID, f"rule-{rule}-count").get_attribute("value") == "5"
    _shoot(driver, screenshots, "map-invoices-alerts")


def test_the_overview_counts_move_live(
    logged_in: WebDriver, stack: Stack, screenshots: Path
) -> None:
    driver, url = logged_in, stack.console_url
    driver.get(f"{url}/")
    before = int(_text(driver, "#synced-invoices"))
    # Its closing reconciliation may disagree (exit 1): the invoice Finance refused in
    # test_retry_an_error_from_the_page may still differ. The flow itself must have run.
    demo = run_dwsim(stack.home, "demo", "--invoices", "2", "--seed", "11", timeout=300)
    assert demo.returncode in (0, 1) and "proposals posted" in demo.stderr, demo.stderr
    # No reload: the page's live fragment refreshes itself.
    _wait(
        driver,
        lambda d: int(_text(d, "#synced-invoices")) >= before + 2,
        "the overview's synced invoices to move without a reload",
    )
    _shoot(driver, screenshots, "overview-after")


def test_one_time_link_roles_and_csrf(stack: Stack) -> None:
    url = stack.console_url
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as http:
        link = stack.login_link()
        first = http.get(link.removeprefix(url))
        assert first.status_code == 303
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert http.get(link.removeprefix(url)).status_code == 401  # used once only
        assert stack.login_link() != link  # the next link is recorded for `dwsim status`
        page = http.get("/maps/invoices?tab=errors")
        assert page.status_code == 200
        # An administrator's form without its CSRF token is refused, and nothing happens.
        refused = http.post("/maps/invoices/pause", data={"csrf": "forged"})
        assert refused.status_code == 403 and "CSRF" in refused.text
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as http:
        login = http.post("/login", data={"token": stack.settings.token_project_manager})
        assert login.status_code == 303
        maps = http.get("/maps")
        assert maps.status_code == 200 and "administrator only" in maps.text
        csrf = maps.text.split('name="csrf" value="')[1].split('"')[0]
        acted = http.post("/maps/invoices/pause", data={"csrf": csrf})
        assert acted.status_code == 403 and "may look but not act" in acted.text
    state = _api(stack, lambda s: s.bridge.get("/maps/invoices"))["state"]
    assert state == "running"
