"""An admin sees a partner's deliveries and sends one again, in a real headless Chromium, English then Urdu.

Screenshots land in test-output/ (kept by CI as artefacts, never committed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referral_service.bootstrap import Services, bootstrap
from referral_service.services import notifications
from referral_service.services.webhooks import register_webhook
from tests.conftest import FakeClock, embedded_settings
from tests.e2e import test_browser_intake as intake
from tests.factories import referral_body
from tests.pipeline import InProcessPipeline
from tests.receivers import webhook_receiver

pytestmark = pytest.mark.e2e

live_server = intake.live_server
browser = intake.browser


@pytest.fixture
def services(home: Path, clock: FakeClock) -> Iterator[Services]:
    svc = bootstrap(embedded_settings(home, REFERRAL_WEBHOOK_ALLOW_PRIVATE="1"), clock=clock)
    yield svc
    svc.dispose()


def test_admin_sees_a_failed_delivery_and_sends_it_again_in_english_then_urdu(
    live_server: str, browser: Any, client: Any, make_user: Any, add_partner: Any, services: Services
) -> None:
    from selenium.webdriver.common.by import By

    intake.OUTPUT.mkdir(exist_ok=True)
    add_partner()
    admin = make_user("admin", password=intake.PASSWORD)
    cw = make_user("caseworker")
    with webhook_receiver() as hook:
        hook.secret = register_webhook(services, "p-peshawar-medical", hook.url)["secret"]
        hook.script = [500]
        assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
        pipeline = InProcessPipeline(services)
        try:
            pipeline.drain()
        finally:
            pipeline.close()
        assert notifications.deliver_due(services)["pending"] == 1

        browser.get(f"{live_server}/deliveries?lang=en")
        intake.fill(browser, "name", admin.actor.name)
        intake.fill(browser, "password", intake.PASSWORD)
        intake.click_and_wait(browser, "form button[type=submit]")
        assert "/deliveries" in browser.current_url
        [row] = browser.find_elements(By.CSS_SELECTOR, "tr.delivery-row")
        assert "assignment.offered" in row.text and "HTTP 500" in row.text and "Waiting to be sent" in row.text
        assert "Zarmeena" not in browser.page_source
        intake.full_page_png(browser, intake.OUTPUT / "deliveries-en.png")

        intake.click_and_wait(browser, "tr.delivery-row button")
        assert "Sent again shortly, with the same webhook-id" in intake.flash_text(browser)
        assert notifications.deliver_due(services)["delivered"] == 1
        assert len({r.headers["webhook-id"] for r in hook.received}) == 1 and len(hook.received) == 2

    browser.get(f"{live_server}/deliveries?lang=ur")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    [row] = browser.find_elements(By.CSS_SELECTOR, "tr.delivery-row")
    assert "پہنچ گیا" in row.text  # delivered
    assert browser.find_element(By.TAG_NAME, "h1").text == "شراکت داروں کو ترسیلات"
    # The viewport shot: the page is shorter than the window, and Chromium's beyond-the-viewport capture
    # shifts a right-to-left page that does not scroll.
    browser.save_screenshot(str(intake.OUTPUT / "deliveries-ur.png"))
