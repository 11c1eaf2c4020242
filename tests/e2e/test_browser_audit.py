"""An auditor reads the audit log in a real headless Chromium (fixtures of test_browser_intake).

Screenshots land in test-output/ (kept by CI as artefacts, never committed).
"""

from __future__ import annotations

from typing import Any

import pytest

from referral_service.services.audit import integrate_all
from tests.e2e import test_browser_intake as intake
from tests.factories import referral_body
from tests.pipeline import drain

pytestmark = pytest.mark.e2e

live_server = intake.live_server
browser = intake.browser


def _rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, "#entries tr.audit-row"))


def test_auditor_filters_verifies_and_opens_who_accessed_a_record_in_english_then_urdu(
    live_server: str, browser: Any, services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    from selenium.webdriver.common.by import By

    intake.OUTPUT.mkdir(exist_ok=True)
    add_partner()
    cw, other, sup = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    auditor = make_user("auditor", password=intake.PASSWORD)
    resp = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers)
    assert resp.status_code == 201
    referral = resp.get_json()
    drain(services)
    assert client.get(f"/api/v1/referrals/{referral['id']}", headers=sup.headers).status_code == 200
    assert client.get(f"/api/v1/referrals/{referral['id']}", headers=other.headers).status_code == 403
    integrate_all(services)

    browser.get(f"{live_server}/audit?lang=en")
    assert "/login" in browser.current_url
    intake.fill(browser, "name", auditor.actor.name)
    intake.fill(browser, "password", intake.PASSWORD)
    intake.click_and_wait(browser, "form button[type=submit]")
    assert browser.current_url.endswith("/audit?lang=en")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Audit log"
    assert "Audit log" in browser.find_element(By.CSS_SELECTOR, "nav.menu").text
    assert len(_rows(browser)) >= 5
    intake.full_page_png(browser, intake.OUTPUT / "audit-log.png")

    # Filter: this referral's reads. Both the supervisor's and the refused caseworker's are there.
    intake.fill(browser, "referral_id", referral["id"])
    intake.fill(browser, "action", "referral.read")
    intake.click_and_wait(browser, ".audit-filters button[type=submit]")
    rows = _rows(browser)
    texts = [r.text for r in rows]
    assert len(rows) == 3 and all("referral.read" in t for t in texts)
    assert sum("Refused" in t for t in texts) == 1 and sum("Allowed" in t for t in texts) == 2
    assert any("Fields: Name, Date of birth, Sex, CNIC, Phone, Address" in t for t in texts)
    export = browser.find_element(By.CSS_SELECTOR, "a.export").get_attribute("href")
    assert f"referral_id={referral['id']}" in export and "action=referral.read" in export

    # Verify, keeping the filters.
    intake.click_and_wait(browser, "button.verify-now")
    verdict = browser.find_element(By.CSS_SELECTOR, "#verify .verdict").text
    assert verdict == "Intact: every entry gives the root of the signed checkpoint."
    assert int(browser.find_element(By.CSS_SELECTOR, ".verify-size").text) >= 5
    assert browser.find_element(By.CSS_SELECTOR, "pre.checkpoint").text.startswith(services.audit.origin)
    assert len(_rows(browser)) == 3  # the same filter still applies
    intake.full_page_png(browser, intake.OUTPUT / "audit-log-filtered-verified.png")

    # Who accessed this record: from the entry's referral link.
    intake.click_and_wait(browser, "#entries a.referral")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Who accessed this record"
    report = browser.find_element(By.CSS_SELECTOR, "table.access").text
    assert sup.actor.name in report and other.actor.name in report and cw.actor.name in report
    assert "Opened the referral" in report and "Submitted the referral" in report and "Refused" in report
    intake.full_page_png(browser, intake.OUTPUT / "audit-referral-access.png")

    # Urdu: right to left, translated; the person's access report, then the log (also on a phone).
    browser.get(f"{live_server}/audit/subjects/{referral['subject_id']}?lang=ur")
    html = browser.find_element(By.TAG_NAME, "html")
    assert (html.get_attribute("dir"), html.get_attribute("lang")) == ("rtl", "ur")
    assert browser.find_element(By.TAG_NAME, "h1").text == "کسی فرد کے لیے رسائی کی رپورٹ"
    urdu_report = browser.find_element(By.CSS_SELECTOR, "table.access").text
    assert sup.actor.name in urdu_report and "ریفرل کھولا" in urdu_report
    # A page shorter than the window: the viewport is the whole page (Chromium's beyond-viewport
    # capture draws a short right-to-left page shifted sideways, though the page itself fits).
    browser.save_screenshot(str(intake.OUTPUT / "audit-subject-access-urdu.png"))
    browser.get(f"{live_server}/audit?lang=ur&referral_id={referral['id']}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "آڈٹ لاگ"
    assert any("انکار کیا گیا" in r.text for r in _rows(browser))
    intake.full_page_png(browser, intake.OUTPUT / "audit-log-urdu.png")
    intake.as_phone(browser)
    intake.assert_fits_the_phone(browser)
    intake.full_page_png(browser, intake.OUTPUT / "audit-log-urdu-phone.png")
    browser.execute_script("document.getElementById('entries').scrollIntoView()")
    browser.save_screenshot(str(intake.OUTPUT / "audit-log-urdu-phone-entries.png"))  # one screen, to read
    intake.as_desktop(browser)
