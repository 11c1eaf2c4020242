"""The SLA report and the suppressed statistics through the API; the analyst sees those and nothing else."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from referral_service.services import reports
from referral_service.services.deadlines import fire_due_deadlines
from tests.e2e.test_api_access_matrix import ENDPOINTS, World, _route_exists, build_world
from tests.factories import referral_body
from tests.pipeline import drain

PESHAWAR = "p-peshawar-medical"


def _submit(client: Any, headers: dict[str, str], i: int, **overrides: Any) -> str:
    body = referral_body(subject__cnic=None, subject__phone=None, subject__full_name=f"Person Number{i}", **overrides)
    resp = client.post("/api/v1/referrals", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["id"])


def test_the_sla_report_gives_times_to_accept_and_first_contact_deadlines_and_declines_per_partner_and_risk(
    client: Any, services: Any, clock: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner(capacity=20)
    cw, sup = make_user("caseworker"), make_user("supervisor")
    staff = make_user("partner", partner_id=PESHAWAR)
    for i in range(4):
        _submit(client, cw.headers, i, risk_level="high")
    drain(services)
    offers = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert len(offers) == 4
    # Accepted after 1 h, 2 h and 3 h; first contact 2, 4 and (for the third) never; one declined.
    for offer in offers[:3]:
        clock.advance(hours=1)
        assert client.post(f"/api/v1/assignments/{offer['id']}/accept", headers=staff.headers).status_code == 200
    resp = client.post(
        f"/api/v1/assignments/{offers[3]['id']}/decline", json={"reason": "no_capacity"}, headers=staff.headers
    )
    assert resp.status_code == 200
    clock.advance(hours=2)
    for offer in offers[:2]:
        resp = client.post(
            f"/api/v1/assignments/{offer['id']}/followups", json={"outcome": "contacted"}, headers=staff.headers
        )
        assert resp.status_code == 201
    clock.advance(days=2)  # the third's first contact (24 h) is missed
    fire_due_deadlines(services)

    today = clock.now().date().isoformat()
    resp = client.get(f"/api/v1/reports/sla?to={today}", headers=sup.headers)
    assert resp.status_code == 200, resp.get_json()
    report = resp.get_json()
    [row] = report["rows"]
    assert (row["partner_id"], row["risk_level"]) == (PESHAWAR, "high")
    assert (row["offered"], row["accepted"], row["declined"], row["expired"]) == (4, 3, 1, 0)
    assert row["declines_by_reason"] == {"no_capacity": 1}
    assert (row["median_hours_to_accept"], row["p90_hours_to_accept"]) == (2.0, 2.8)
    # From acceptance to the first follow-up: 4 h and 3 h.
    assert (row["median_hours_to_first_contact"], row["p90_hours_to_first_contact"]) == (3.5, 3.9)
    # Accept deadlines: 3 met (answered in time, the decline too); first contact: 2 met, 1 missed.
    assert (row["deadlines_met"], row["deadlines_missed"]) == (6, 1)
    assert row["open"] == 3
    assert set(report) == {"from", "to", "rows"}

    assert client.get("/api/v1/reports/sla?from=2026-13-01", headers=sup.headers).status_code == 422
    assert client.get("/api/v1/reports/sla?from=2026-05-02&to=2026-05-01", headers=sup.headers).status_code == 422
    # Sent empty is not left out (the fuzz found `?to=` answered as "today"): 422 naming the parameter.
    for empty in ("to=", "from=", "from=&to=2026-05-01"):
        resp = client.get(f"/api/v1/reports/sla?{empty}", headers=sup.headers)
        assert resp.status_code == 422, empty
        assert set(resp.get_json()["error"]["fields"]) <= {"from", "to"} and resp.get_json()["error"]["fields"]
        assert client.get(f"/api/v1/reports/statistics?{empty}", headers=sup.headers).status_code == 422
    assert client.get("/api/v1/reports/sla", headers=cw.headers).status_code == 403
    assert client.get("/api/v1/reports/sla", headers=make_user("analyst").headers).status_code == 403


def _seed_statistics(client: Any, cw: Any) -> None:
    # Peshawar: 12 high, 3 low (small); Mardan: 9 high, 6 low; Swat: 2 critical, 8 high.
    people = [("Peshawar", "high")] * 12 + [("Peshawar", "low")] * 3
    people += [("Mardan", "high")] * 9 + [("Mardan", "low")] * 6
    people += [("Swat", "critical")] * 2 + [("Swat", "high")] * 8
    for i, (district, risk) in enumerate(people):
        _submit(client, cw.headers, i, subject__district=district, risk_level=risk, consent={"given": False})


def test_statistics_suppress_small_cells_and_enough_others_that_no_hidden_count_follows(
    client: Any, services: Any, make_user: Any
) -> None:
    cw, analyst = make_user("caseworker"), make_user("analyst")
    _seed_statistics(client, cw)

    by_district = client.get("/api/v1/reports/statistics?by=district", headers=analyst.headers).get_json()
    assert by_district["total"] == 40 and by_district["threshold"] == 5
    assert {c["district"]: c["count"] for c in by_district["cells"]} == {"Mardan": 15, "Peshawar": 15, "Swat": 10}

    resp = client.get("/api/v1/reports/statistics?by=district,risk_level", headers=analyst.headers)
    assert resp.status_code == 200
    two = resp.get_json()
    cells = {(c["district"], c["risk_level"]): c for c in two["cells"]}
    assert cells[("Peshawar", "low")] == {
        "district": "Peshawar",
        "risk_level": "low",
        "count": None,
        "suppressed": True,
    }
    assert cells[("Swat", "critical")]["suppressed"]
    assert cells[("Mardan", "critical")]["count"] == 0  # zeros are shown
    # The attack: a row total (from by=district) less the row's other published cells, and the same
    # down each column (from by=risk_level), and the total less everything published.
    by_risk = client.get("/api/v1/reports/statistics?by=risk_level", headers=analyst.headers).get_json()
    rows = {c["district"]: c["count"] for c in by_district["cells"]}
    cols = {c["risk_level"]: c["count"] for c in by_risk["cells"]}
    for (district, risk), cell in cells.items():
        if not cell["suppressed"]:
            continue
        row_hidden = [k for k, c in cells.items() if k[0] == district and c["suppressed"]]
        col_hidden = [k for k, c in cells.items() if k[1] == risk and c["suppressed"]]
        assert len(row_hidden) >= 2 or rows[district] is None, f"{district} row gives {risk} away"
        assert len(col_hidden) >= 2 or cols.get(risk) is None, f"{risk} column gives {district} away"
        published = sum(c["count"] for c in cells.values() if not c["suppressed"])
        assert sum(1 for c in cells.values() if c["suppressed"]) >= 2 or two["total"] - published != cell["count"]
    # Nothing names a person or a record.
    text = json.dumps([by_district, two, by_risk])
    assert "Person" not in text and '"id"' not in text and "referral" not in text


def test_statistics_refuse_unknown_dimensions_and_are_for_analysts_and_supervisors(
    client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    analyst, sup, cw = make_user("analyst"), make_user("supervisor"), make_user("caseworker")
    for bad in ("name", "district,district", "district,need,sex", "cnic"):
        assert client.get(f"/api/v1/reports/statistics?by={bad}", headers=analyst.headers).status_code == 422
    assert client.get("/api/v1/reports/statistics?by=need,month", headers=sup.headers).status_code == 200
    assert client.get("/api/v1/reports/statistics", headers=cw.headers).status_code == 403
    staff = make_user("partner", partner_id=PESHAWAR)
    assert client.get("/api/v1/reports/statistics", headers=staff.headers).status_code == 403


def test_the_statistics_count_sex_and_age_band_recorded_at_intake(client: Any, make_user: Any) -> None:
    cw, analyst = make_user("caseworker"), make_user("analyst")
    for i in range(6):
        _submit(client, cw.headers, i, subject__date_of_birth="2012-01-01", subject__sex="male")
    report = client.get("/api/v1/reports/statistics?by=sex,age_band", headers=analyst.headers).get_json()
    assert report["cells"] == [{"sex": "male", "age_band": "12-17", "count": 6, "suppressed": False}]


def test_the_csv_cannot_run_as_a_spreadsheet_formula() -> None:
    report = {
        "by": ["district"],
        "threshold": 5,
        "total": 12,
        "cells": [
            {"district": '=HYPERLINK("http://x")', "count": 9, "suppressed": False},
            {"district": "+cmd", "count": None, "suppressed": True},
        ],
    }
    lines = list(csv.reader(io.StringIO(reports.statistics_csv(report))))
    assert lines == [["district", "count"], ['\'=HYPERLINK("http://x")', "9"], ["'+cmd", "<5"], ["total", "12"]]


# The analyst's column of the access matrix: the statistics, and nothing that names a record or a partner.
ANALYST_ALLOWED = {"report_statistics"}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_the_analyst_is_refused_everything_but_the_statistics(
    app: Any, services: Any, client: Any, make_user: Any, add_partner: Any, endpoint: str
) -> None:
    spec = ENDPOINTS[endpoint]
    if not _route_exists(app, spec):
        pytest.skip(f"{spec.method} {spec.path} is in the contract but not built yet")
    world: World = build_world(services, client, make_user, add_partner, state=spec.state, duplicate=spec.duplicate)
    world.headers["analyst"] = make_user("analyst").headers
    before = world.snapshot()
    resp = world.call(spec.method, spec.path, "analyst", spec.body() if spec.body else None)
    if endpoint in ANALYST_ALLOWED:
        assert resp.status_code == 200
    else:
        assert resp.status_code == 403, resp.get_data(as_text=True)
        assert resp.get_json()["error"]["code"] == "forbidden"
    assert world.snapshot() == before


def test_users_create_makes_an_analyst_whose_token_reads_the_statistics_only(client: Any, home: Any) -> None:
    from tests.e2e.service_process import base_env, cli

    created = json.loads(cli(base_env(home), "users", "create", "--role", "analyst", "--name", "psn-analyst").stdout)
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/reports/statistics?by=month", headers=headers).status_code == 200
    for path in ("/api/v1/referrals", "/api/v1/partners", "/api/v1/deadlines/overdue", "/api/v1/reports/sla"):
        assert client.get(path, headers=headers).status_code == 403, path
