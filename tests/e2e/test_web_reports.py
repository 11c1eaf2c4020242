"""/reports and the supervision page's follow-up columns, through the pages (signed in with a password)."""

from __future__ import annotations

import base64
import re
from typing import Any

from referral_service.services.deadlines import fire_due_deadlines
from tests.e2e.test_reports import PESHAWAR, _seed_statistics, _submit
from tests.pipeline import drain

PASSWORD = "reports page password"


def _sign_in(client: Any, name: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)


def _charts(page: str) -> list[str]:
    return [base64.b64decode(m).decode() for m in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)]


def test_the_analyst_lands_on_the_statistics_with_a_chart_and_never_sees_the_sla(
    app: Any, client: Any, make_user: Any
) -> None:
    _seed_statistics(client, make_user("caseworker"))
    analyst = make_user("analyst", password=PASSWORD)
    _sign_in(client, analyst.actor.name)
    assert client.get("/").headers["Location"].endswith("/reports")
    page = client.get("/reports?by=district,risk_level&lang=en").get_data(as_text=True)
    assert "Referrals by District × Risk" in page and 'id="sla"' not in page
    assert page.count("&lt;5") >= 2  # the small cells, and their complements
    assert "<script" not in page
    [chart] = _charts(page)
    assert chart.startswith("<svg") or "<svg" in chart[:200]
    assert "<script" not in chart
    for path in ("/supervision", "/referrals", "/inbox", "/referrals/new"):
        assert client.get(path).status_code == 403, path
    csv_resp = client.get("/reports/statistics.csv?by=district")
    assert csv_resp.status_code == 200 and csv_resp.mimetype == "text/csv"
    assert csv_resp.get_data(as_text=True).splitlines()[:2] == ["district,count", "Mardan,15"]
    urdu = client.get("/reports?by=risk_level&lang=ur").get_data(as_text=True)
    assert 'dir="rtl"' in urdu


def test_supervisors_see_the_sla_and_reminders_escalation_and_the_policy_on_supervision(
    client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner(capacity=10)
    cw, sup = make_user("caseworker"), make_user("supervisor", password=PASSWORD)
    staff = make_user("partner", partner_id=PESHAWAR)
    _submit(client, cw.headers, 1, risk_level="critical")
    drain(services)
    [offer] = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    for hours in (4, 2, 2, 2):  # critical: due at 4 h, reminded every 2 h, escalated after 2 reminders
        clock.advance(hours=hours, minutes=1)
        fire_due_deadlines(services)
    _sign_in(client, sup.actor.name)
    page = client.get("/supervision?lang=en").get_data(as_text=True)
    assert 'id="escalated-count"' in page and "1 escalated" in page
    row = re.search(r'<tr class="overdue-row escalated-row">(.*?)</tr>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "Escalated" in row and ">3<" in row and "0 d 6 h" in row  # due at 4 h, now 10 h after acceptance
    assert 'id="policy"' in page and "PT2H" in page
    reports_page = client.get(f"/reports?lang=en&to={clock.now().date()}").get_data(as_text=True)
    assert 'id="sla"' in reports_page and "Peshawar Medical Relief" in reports_page
    assert len(_charts(reports_page)) == 3
