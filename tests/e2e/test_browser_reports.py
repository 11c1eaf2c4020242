"""The SLA and statistics pages in a real headless Chromium, English then Urdu (fixtures of
test_browser_intake). Screenshots land in test-output/ (kept by CI as artefacts, never committed)."""

from __future__ import annotations

from typing import Any

import pytest

from referral_service.services.deadlines import fire_due_deadlines
from tests.e2e import test_browser_intake as intake
from tests.e2e.test_reports import PESHAWAR, _seed_statistics, _submit
from tests.pipeline import drain

pytestmark = pytest.mark.e2e

live_server = intake.live_server
browser = intake.browser


def _sign_in(browser: Any, live_server: str, name: str, path: str) -> None:
    browser.get(f"{live_server}{path}")
    assert "/login" in browser.current_url
    intake.fill(browser, "name", name)
    intake.fill(browser, "password", intake.PASSWORD)
    intake.click_and_wait(browser, "form button[type=submit]")


def _images_drawn(browser: Any) -> list[int]:
    """The natural width of every chart image: 0 would be an image the browser could not draw."""
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll('figure.chart img')].map(i => i.complete ? i.naturalWidth : 0)"
        )
    )


def test_a_supervisor_reads_the_sla_and_the_statistics_with_charts_in_english_and_urdu(
    live_server: str, browser: Any, client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    from selenium.webdriver.common.by import By

    intake.OUTPUT.mkdir(exist_ok=True)
    add_partner(capacity=20)
    add_partner(id="p-peshawar-legal", name="Peshawar Legal Aid", services=["legal_aid"], languages=["ur"])
    cw = make_user("caseworker")
    staff = make_user("partner", partner_id=PESHAWAR)
    _seed_statistics(client, cw)
    for i, risk in enumerate(("critical", "high", "high", "medium", "low")):
        _submit(client, cw.headers, 100 + i, risk_level=risk, needs=["medical", "legal_aid"])
    drain(services)
    offers = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    for n, offer in enumerate(offers):
        clock.advance(hours=1)
        if n == 0:
            resp = client.post(
                f"/api/v1/assignments/{offer['id']}/decline", json={"reason": "out_of_area"}, headers=staff.headers
            )
            assert resp.status_code == 200
            continue
        assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
        if n % 2:
            clock.advance(hours=2)
            resp = client.post(
                f"/api/v1/assignments/{offer['id']}/followups", json={"outcome": "contacted"}, headers=staff.headers
            )
            assert resp.status_code == 201
    clock.advance(days=2)
    fire_due_deadlines(services)
    supervisor = make_user("supervisor", password=intake.PASSWORD)
    today = clock.now().date()

    _sign_in(browser, live_server, supervisor.actor.name, f"/reports?lang=en&to={today}&by=district,risk_level")
    assert browser.find_element(By.CSS_SELECTOR, "#sla h2").text == "How well promises were kept"
    rows = browser.find_elements(By.CSS_SELECTOR, "#sla tr.sla-row")
    assert {r.find_element(By.CSS_SELECTOR, "td").text for r in rows} == {
        "Peshawar Medical Relief",
        "Peshawar Legal Aid",
    }
    assert "Out of our area: 1" in browser.find_element(By.ID, "sla").text
    stats = browser.find_element(By.ID, "statistics").text
    assert "Referrals by District × Risk" in stats and "<5" in stats
    assert all(width > 0 for width in _images_drawn(browser)) and len(_images_drawn(browser)) == 3
    assert browser.execute_script("return document.scripts.length") == 0
    intake.full_page_png(browser, intake.OUTPUT / "reports-en.png")

    browser.get(f"{live_server}/reports?lang=ur&to={today}&by=risk_level")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    assert browser.find_element(By.CSS_SELECTOR, "#sla h2").text == "وعدے کتنے پورے ہوئے"
    assert "ریفرلز بلحاظ" in browser.find_element(By.CSS_SELECTOR, "#statistics h2").text
    assert all(width > 0 for width in _images_drawn(browser))
    intake.full_page_png(browser, intake.OUTPUT / "reports-ur.png")

    browser.get(f"{live_server}/supervision?lang=en")
    assert browser.find_element(By.CSS_SELECTOR, "#policy h2").text == "Deadline policy in force"
    intake.full_page_png(browser, intake.OUTPUT / "supervision-followups-en.png")


def test_an_analyst_sees_only_the_statistics(live_server: str, browser: Any, client: Any, make_user: Any) -> None:
    from selenium.webdriver.common.by import By

    intake.OUTPUT.mkdir(exist_ok=True)
    _seed_statistics(client, make_user("caseworker"))
    analyst = make_user("analyst", password=intake.PASSWORD)
    _sign_in(browser, live_server, analyst.actor.name, "/?lang=en")
    assert browser.current_url.endswith("/reports")
    assert browser.find_elements(By.ID, "sla") == []
    menu = browser.find_element(By.CSS_SELECTOR, "nav.menu").text
    assert "Reports" in menu and "Supervision" not in menu and "referral" not in menu.lower()
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#statistics table.statistics td")]
    assert cells and all(c == "<5" or c.isdigit() for c in cells)
    intake.full_page_png(browser, intake.OUTPUT / "reports-analyst-en.png")
