"""A caseworker's intake in a real headless Chromium against the app served by a real WSGI server.

Screenshots for people to look at land in test-output/ (kept by CI as artefacts, never committed).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
PASSWORD = "browser test password"
PHONE_WIDTH, PHONE_HEIGHT = 390, 844


def _need_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    message = f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def live_server(services: Any) -> Iterator[str]:
    from referral_service.app import create_app
    from referral_service.http_server import waitress_server

    # Plain http on loopback: a Secure cookie would never come back, so this server alone relaxes it.
    app = create_app(services, {"SESSION_COOKIE_SECURE": False})
    server = waitress_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=5)


@pytest.fixture
def browser() -> Iterator[Any]:
    _need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
        "--lang=en-GB",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def as_phone(driver: Any) -> None:
    """Render as a phone does (narrow viewport, overlay scrollbars, the page's viewport meta honoured)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 2, "mobile": True},
    )


def as_desktop(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def assert_fits_the_phone(driver: Any) -> None:
    """Nothing on the page is wider than the screen (no sideways scrolling on a phone)."""
    wide = driver.execute_script("""
        const width = document.documentElement.clientWidth;
        return [...document.querySelectorAll('body *')]
            .filter(e => {
                const r = e.getBoundingClientRect();
                return r.width && (r.right > width + 1 || r.left < -1);
            })
            .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().left)
                                  + '..' + Math.round(e.getBoundingClientRect().right));
    """)
    assert not wide, f"wider than a {PHONE_WIDTH}px phone: {wide}"


def full_page_png(driver: Any, path: Path) -> None:
    """The whole scrolled page, not just the viewport, so the entire form can be reviewed."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def fill(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.NAME, name)
    box.clear()
    box.send_keys(value)


def choose(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.NAME, name)).select_by_value(value)


def tick(driver: Any, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f'input[name="{name}"][value="{value}"]')
    if not box.is_selected():
        box.click()


def click_and_wait(driver: Any, css: str) -> None:
    """Click something that loads a new page and wait until it has replaced the old one.

    Without the wait, the next lookup can find elements of the page being left (stale references).
    The old document is marked and the wait is for a complete document without the mark: asking
    the old element whether it is stale races with Chromium tearing it down, which then answers
    with an inspector error instead of a stale-element one.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.documentElement.dataset.leaving = 'yes'")
    driver.find_element(By.CSS_SELECTOR, css).click()

    def replaced(d: Any) -> bool:
        try:
            return bool(
                d.execute_script(
                    "return document.readyState === 'complete' && !document.documentElement.dataset.leaving"
                )
            )
        except WebDriverException:  # mid-navigation: ask again
            return False

    WebDriverWait(driver, 15).until(replaced)


def submit_form(driver: Any) -> None:
    click_and_wait(driver, "form.referral-form button[type=submit]")


def flash_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".flash"))


def test_caseworker_submits_in_english_and_urdu_and_finds_both(live_server: str, browser: Any, make_user: Any) -> None:
    from selenium.webdriver.common.by import By

    OUTPUT.mkdir(exist_ok=True)
    caseworker = make_user("caseworker", password=PASSWORD)

    # Sign in; the protected page sends us to /login and back.
    browser.get(f"{live_server}/referrals/new?lang=en")
    assert "/login" in browser.current_url
    fill(browser, "name", caseworker.actor.name)
    fill(browser, "password", PASSWORD)
    click_and_wait(browser, "form button[type=submit]")
    assert browser.current_url.endswith("/referrals/new?lang=en")

    # English: a complete referral.
    fill(browser, "subject.full_name", "Zarmeena Khattak")
    choose(browser, "subject.sex", "female")
    fill(browser, "subject.cnic", "17301-1234567-2")
    fill(browser, "subject.phone", "+923001234567")
    choose(browser, "subject.district", "Peshawar")
    choose(browser, "subject.preferred_language", "ps")
    fill(browser, "incident.type", "bombing")
    fill(browser, "incident.narrative", "Injured at the bazaar blast")
    tick(browser, "needs", "medical")
    tick(browser, "needs", "psychosocial")
    choose(browser, "risk_level", "high")
    tick(browser, "consent.given", "yes")
    tick(browser, "consent.method", "verbal")
    tick(browser, "consent.share", "contact")
    submit_form(browser)
    english = re.search(r"Referral (VAN-\d{4}-\d{6}) was submitted", flash_text(browser))
    assert english, flash_text(browser)

    # Urdu, switched with the link on the page: right-to-left, and a mistake first.
    browser.get(f"{live_server}/referrals/new")
    click_and_wait(browser, 'nav.langs a[lang="ur"]')
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("dir"), html.get_attribute("lang")) == ("rtl", "ur")
    assert "نیا ریفرل" in browser.find_element(By.TAG_NAME, "h1").text
    fill(browser, "subject.full_name", "ثمینہ بی بی")
    fill(browser, "subject.cnic", "4210")
    choose(browser, "subject.province", "Sindh")
    choose(browser, "subject.district", "Karachi South")
    choose(browser, "risk_level", "critical")
    tick(browser, "consent.given", "no")
    submit_form(browser)

    cnic_error = browser.find_element(By.ID, "f-subject-cnic-error")
    # The pattern is wrapped in left-to-right isolates so it reads the same inside Urdu text.
    assert cnic_error.text == "شناختی کارڈ نمبر 13 ہندسوں کا ہوتا ہے: \u2066#####-#######-#\u2069۔"
    assert browser.find_element(By.ID, "f-needs-error").text == "کم از کم ایک ضرورت منتخب کریں۔"
    # The message sits with its field, and what was typed is still there.
    field = cnic_error.find_element(By.XPATH, "./ancestor::div[contains(@class, 'field')][1]")
    assert field.find_element(By.NAME, "subject.cnic").get_attribute("value") == "4210"
    assert browser.find_element(By.NAME, "subject.full_name").get_attribute("value") == "ثمینہ بی بی"
    assert browser.find_element(By.NAME, "subject.district").get_attribute("value") == "Karachi South"
    full_page_png(browser, OUTPUT / "urdu-referral-form.png")

    as_phone(browser)
    assert_fits_the_phone(browser)
    full_page_png(browser, OUTPUT / "urdu-referral-form-phone.png")
    as_desktop(browser)

    fill(browser, "subject.cnic", "42201-7654321-4")
    tick(browser, "needs", "legal_aid")
    submit_form(browser)
    urdu = re.search(r"ریفرل (VAN-\d{4}-\d{6}) جمع ہو گیا", flash_text(browser))
    assert urdu, flash_text(browser)
    assert "آگے نہیں بھیجا گیا: رضامندی نہیں دی گئی" in flash_text(browser)

    # Both are in "my referrals", each with its status.
    click_and_wait(browser, 'nav.langs a[lang="en"]')
    click_and_wait(browser, 'nav.menu a[href="/referrals"]')
    assert browser.find_element(By.TAG_NAME, "h1").text == "My referrals"
    rows = {
        row.find_element(By.CSS_SELECTOR, "a.ref").text: row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.referral-row")
    }
    assert set(rows) == {english.group(1), urdu.group(1)}
    assert "Zarmeena Khattak" in rows[english.group(1)] and "Submitted" in rows[english.group(1)]
    assert "ثمینہ بی بی" in rows[urdu.group(1)] and "not routed: no consent" in rows[urdu.group(1)]

    as_phone(browser)
    full_page_png(browser, OUTPUT / "my-referrals-phone.png")
    assert_fits_the_phone(browser)
