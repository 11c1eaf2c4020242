"""A supervisor decides possible duplicates in a real headless Chromium (fixtures of test_browser_intake).

Screenshots land in test-output/ (kept by CI as artefacts, never committed).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e import test_browser_intake as intake
from tests.factories import referral_body

pytestmark = pytest.mark.e2e

# The real WSGI server and browser of the intake test, shared rather than copied.
live_server = intake.live_server
browser = intake.browser


def _submit(client: Any, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def _pending_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        a.get_attribute("id").removeprefix("dup-")
        for a in driver.find_elements(By.CSS_SELECTOR, "#duplicates article.duplicate")
    ]


def _statuses(client: Any, headers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for status in ("pending", "confirmed", "dismissed"):
        for item in client.get(f"/api/v1/duplicates?status={status}", headers=headers).get_json()["items"]:
            out[item["id"]] = item["status"]
    return out


def test_supervisor_confirms_one_duplicate_and_dismisses_another_in_english_then_urdu(
    live_server: str, browser: Any, client: Any, make_user: Any
) -> None:
    from selenium.webdriver.common.by import By

    intake.OUTPUT.mkdir(exist_ok=True)
    a, b = make_user("caseworker"), make_user("caseworker")
    supervisor = make_user("supervisor", password=intake.PASSWORD)
    first = _submit(client, a.headers)
    _submit(client, b.headers, subject__full_name="Gul Bano", subject__cnic=None, subject__date_of_birth=None)
    _submit(client, b.headers, subject__full_name="Bibi Zarmeena", subject__phone=None, subject__district="Mardan")

    browser.get(f"{live_server}/supervision?lang=en")
    assert "/login" in browser.current_url
    intake.fill(browser, "name", supervisor.actor.name)
    intake.fill(browser, "password", intake.PASSWORD)
    intake.click_and_wait(browser, "form button[type=submit]")
    assert browser.current_url.endswith("/supervision?lang=en")

    heading = browser.find_element(By.CSS_SELECTOR, "#duplicates h2").text
    assert heading.startswith("Possible duplicates")
    pending = _pending_ids(browser)
    assert len(pending) == 2
    confirm_me, dismiss_me = pending
    pair = browser.find_element(By.ID, f"dup-{confirm_me}").text
    assert "Zarmeena Khattak" in pair and first["reference"] in pair and "Peshawar" in pair
    intake.full_page_png(browser, intake.OUTPUT / "supervision-duplicates.png")

    intake.click_and_wait(browser, f"#dup-{confirm_me} button.confirm")
    assert "Confirmed: the two referrals are now linked as one person" in intake.flash_text(browser)
    assert _pending_ids(browser) == [dismiss_me]

    intake.click_and_wait(browser, f"#dup-{dismiss_me} button.dismiss")
    assert "Dismissed: the two referrals stay separate people." in intake.flash_text(browser)
    assert _pending_ids(browser) == []
    assert browser.find_element(By.CSS_SELECTOR, "#duplicates .empty").text == "No possible duplicates to decide."
    assert _statuses(client, supervisor.headers) == {confirm_me: "confirmed", dismiss_me: "dismissed"}

    # Urdu: right to left, translated, and a new pair decided there too.
    _submit(client, a.headers, subject__full_name="Zarmeena K.", subject__phone=None)
    browser.get(f"{live_server}/supervision?lang=ur")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("dir"), html.get_attribute("lang")) == ("rtl", "ur")
    assert browser.find_element(By.TAG_NAME, "h1").text == "نگرانی"
    assert browser.find_element(By.CSS_SELECTOR, "#duplicates h2").text.startswith("ممکنہ دہرے اندراج")
    urdu_pending = _pending_ids(browser)
    assert len(urdu_pending) == 2  # the new referral matches both earlier ones with that CNIC
    buttons = browser.find_element(By.ID, f"dup-{urdu_pending[0]}").find_elements(By.TAG_NAME, "button")
    assert [button.text for button in buttons] == ["تصدیق کریں: ایک ہی فرد", "مسترد کریں: الگ الگ افراد"]
    intake.full_page_png(browser, intake.OUTPUT / "supervision-duplicates-urdu.png")
    intake.as_phone(browser)
    intake.assert_fits_the_phone(browser)
    intake.full_page_png(browser, intake.OUTPUT / "supervision-duplicates-urdu-phone.png")
    intake.as_desktop(browser)
    intake.click_and_wait(browser, f"#dup-{urdu_pending[0]} button.dismiss")
    assert "مسترد: دونوں ریفرل الگ الگ افراد کے ہی رہیں گے۔" in intake.flash_text(browser)
    assert _pending_ids(browser) == urdu_pending[1:]
    assert _statuses(client, supervisor.headers)[urdu_pending[0]] == "dismissed"
