"""The OpenAPI document is generated from the app: every route is in it, and real answers match it.

The document used to be a hand-written list of paths that had drifted from the routes (withdraw,
reopen, GET /partners/{id} and the ops endpoints were missing). Now it is built from `app.url_map`
and each view's declaration; these tests compare it with the url_map, and check the answers of
every operation (success and errors) against its response schemas with openapi-core.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.deserializing.media_types.util import plain_loads
from openapi_spec_validator import validate as validate_document
from werkzeug.test import EnvironBuilder

from referral_service.api.openapi import build_spec, documented_methods, documented_rules, openapi_path
from referral_service.app import MAX_BODY_BYTES, create_app
from referral_service.bootstrap import Services, bootstrap
from referral_service.db.models import Notification
from referral_service.services.audit import integrate_all
from referral_service.services.subjects import erase_subject
from tests.conftest import FakeClock, UserHandle, embedded_settings
from tests.e2e.test_damaged_records import damage_key_of
from tests.factories import partner, referral_body
from tests.pipeline import drain

MEDICAL = "p-peshawar-medical"


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(path, method) of every API and operations route the app serves, in OpenAPI's path syntax."""
    return {(openapi_path(rule.rule), method) for rule in documented_rules(app) for method in documented_methods(rule)}


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item if method != "parameters"}


def test_every_api_and_ops_route_is_documented_and_nothing_else(app: Flask) -> None:
    routes = _routes(app)
    # The API itself and the ops endpoints are among them; the web pages are not API.
    assert {
        ("/api/v1/referrals/{referral_id}/withdraw", "POST"),
        ("/api/v1/referrals/{referral_id}/reopen", "POST"),
        ("/api/v1/partners/{partner_id}", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
        ("/api/v1/openapi.json", "GET"),
    } <= routes
    assert all(path.startswith("/api/v1/") or path in ("/healthz", "/readyz", "/metrics") for path, _ in routes)
    every_api_rule = {
        (openapi_path(r.rule), m)
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/v1/")
        for m in documented_methods(r)
    }
    assert every_api_rule <= routes
    documented = _documented(build_spec(app))
    assert sorted(routes - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - routes) == [], "documented operations that no route serves"


def test_a_route_without_a_declaration_is_missing_from_the_document(services: Services) -> None:
    app = create_app(services, {"TESTING": True})
    # A registered blueprint takes no more routes; add one on the app under the API blueprint's name.
    app.add_url_rule("/api/v1/undeclared", endpoint="api.undeclared", view_func=lambda: ("", 204))
    assert sorted(_routes(app) - _documented(build_spec(app))) == [("/api/v1/undeclared", "GET")]


def test_the_document_is_valid_openapi_with_unique_operation_ids(app: Flask) -> None:
    doc = build_spec(app)
    validate_document(doc)
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m != "parameters"]
    assert len(ids) == len(set(ids))
    for item in doc["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert any(code.startswith("2") for code in op["responses"]), op["operationId"]
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")) and op["operationId"] != "readyz":
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_errors_that_follow_from_an_operation_are_documented_on_it(app: Flask) -> None:
    paths = build_spec(app)["paths"]
    submit = paths["/api/v1/referrals"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409", "413", "422", "429"} <= set(submit)
    assert "WWW-Authenticate" in submit["401"]["headers"] and "Retry-After" in submit["429"]["headers"]
    reopen = paths["/api/v1/referrals/{referral_id}/reopen"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "413", "422", "429"} <= set(reopen["responses"])
    assert reopen["requestBody"]["required"] is True
    withdraw = paths["/api/v1/referrals/{referral_id}/withdraw"]["post"]
    assert withdraw["requestBody"]["required"] is False
    directory = paths["/api/v1/partners/{partner_id}"]["get"]["responses"]
    # Every signed-in role reads it but the analyst, who is refused (the fuzz found the 403 undocumented).
    assert set(directory) == {"200", "401", "403", "404", "429", "503"}
    assert "403" in paths["/api/v1/partners"]["get"]["responses"]
    healthz = paths["/healthz"]["get"]
    assert healthz["security"] == [] and set(healthz["responses"]) == {"200"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert paths["/metrics"]["get"]["security"] == [{"metricsToken": []}]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert paths["/api/v1/openapi.json"]["get"]["security"] == []


# -- real answers against the document ----------------------------------------------------------------
class CheckedClient:
    """Sends each request through the Flask test client and checks the answer against the document:
    the status must be documented for the operation, and the body must match its schema."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.routes = app.url_map.bind("localhost")
        # CSV is text, as text/plain is (openapi-core reads only the media types it knows as text).
        csv_is_text = Config(extra_media_type_deserializers={"text/csv": plain_loads})
        self.openapi = OpenAPI.from_dict(build_spec(app), config=csv_is_text)
        self.seen: set[tuple[str, str, int]] = set()

    def call(
        self,
        method: str,
        path: str,
        status: int,
        *,
        user: UserHandle | None = None,
        headers: dict[str, str] | None = None,
        check_request: bool = True,
        **kwargs: Any,
    ) -> Any:
        all_headers = {**(user.headers if user else {}), **(headers or {})}
        # The same request again, unread, for openapi-core (the test client's copy has been consumed).
        request = WerkzeugOpenAPIRequest(
            EnvironBuilder(path=path, method=method, headers=all_headers, **kwargs).get_request()
        )
        if check_request:  # what the test sends must be what the document says the operation takes
            self.openapi.validate_request(request)
        resp = self.client.open(path, method=method, headers=all_headers, **kwargs)
        assert resp.status_code == status, (method, path, resp.status_code, resp.get_data(as_text=True)[:500])
        self.openapi.validate_response(request, WerkzeugOpenAPIResponse(resp))
        rule, _ = self.routes.match(path.partition("?")[0], method=method, return_rule=True)
        self.seen.add((openapi_path(rule.rule), method.upper(), status))
        return resp.get_json(silent=True)

    def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        return self.call("GET", path, status, **kwargs)

    def post(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        return self.call("POST", path, status, **kwargs)


@pytest.fixture
def api(app: Flask) -> CheckedClient:
    return CheckedClient(app)


def _successes(doc: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (path, method.upper(), int(code))
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method != "parameters"
        for code in op["responses"]
        if code.startswith("2")
    }


def test_answers_of_every_operation_match_the_documented_schemas(
    api: CheckedClient, app: Flask, services: Services, clock: FakeClock, make_user: Any, add_partner: Any
) -> None:
    add_partner(capacity=10)
    cw, other_cw, sup = make_user("caseworker"), make_user("caseworker"), make_user("supervisor")
    staff, admin = make_user("partner", partner_id=MEDICAL), make_user("admin")

    # Operations endpoints and the document itself.
    api.get("/api/v1/openapi.json")
    api.get("/healthz")
    api.get("/readyz")
    api.get("/metrics", 404, check_request=False)  # no REFERRAL_METRICS_TOKEN here: off

    # The partner directory.
    created = api.post("/api/v1/partners", 201, user=admin, json=partner(id="p-peshawar-legal", services=["legal_aid"]))
    assert created["id"] == "p-peshawar-legal"
    api.post("/api/v1/partners", 403, user=cw, json=partner(id="p-other"))
    api.post("/api/v1/partners", 422, user=admin, json=partner(capacity="ten"), check_request=False)
    assert api.get("/api/v1/partners?limit=1", user=staff)["next"] is not None
    api.get(f"/api/v1/partners/{MEDICAL}", user=cw)
    api.get("/api/v1/partners/p-nobody", 404, user=cw)
    analyst = make_user("analyst")  # aggregate statistics only: the directory refuses, as documented
    api.get("/api/v1/partners", 403, user=analyst)
    api.get(f"/api/v1/partners/{MEDICAL}", 403, user=analyst)

    # Intake: a repeat submission with the same key is answered as the first; a different body is a conflict.
    key = {"Idempotency-Key": "intake-1"}
    first = api.post("/api/v1/referrals", 201, user=cw, headers=key, json=referral_body())
    assert api.post("/api/v1/referrals", 201, user=cw, headers=key, json=referral_body())["id"] == first["id"]
    api.post("/api/v1/referrals", 409, user=cw, headers=key, json=referral_body(risk_level="low"))
    api.post("/api/v1/referrals", 403, user=staff, json=referral_body())
    api.post("/api/v1/referrals", 422, user=cw, json=referral_body(needs=[]), check_request=False)
    api.post("/api/v1/referrals", 400, user=cw, data="{not json", content_type="application/json", check_request=False)
    api.post(
        "/api/v1/referrals",
        413,
        user=cw,
        data=b"x" * (MAX_BODY_BYTES + 1),
        content_type="application/json",
        check_request=False,
    )
    # The supervisor may see the earlier referral of the same CNIC: the answer warns of it.
    repeat = api.post("/api/v1/referrals", 201, user=sup, json=referral_body(subject__phone=None))
    assert repeat["warnings"][0]["matched_on"] == ["cnic"]
    later = api.post(
        "/api/v1/referrals",
        201,
        user=cw,
        json=referral_body(
            risk_level="low",
            needs=["medical", "legal_aid"],
            subject__cnic="17301-7654321-1",
            consent__share=["contact", "identity", "incident"],
        ),
    )
    drain(services)

    # Reading: the caseworker, a supervisor, a partner holding the case, and someone who may not.
    mine = api.get(f"/api/v1/referrals/{first['id']}", user=cw)
    assert mine["routing_decisions"] and mine["consent"]["given"] is True
    api.get(f"/api/v1/referrals/{first['id']}", user=sup)
    shared = api.get(f"/api/v1/referrals/{later['id']}", user=staff)
    assert "cnic" in shared["subject"] and "caseworker_id" not in shared
    api.get(f"/api/v1/referrals/{first['id']}", 403, user=other_cw)
    api.get("/api/v1/referrals/no-such-referral", 404, user=cw)
    api.get("/api/v1/referrals", 401, check_request=False)
    api.get("/api/v1/referrals", 401, headers={"Authorization": "Bearer not-a-token"})
    page = api.get("/api/v1/referrals?limit=1", user=cw)
    assert len(page["items"]) == 1 and page["next"]
    api.get(f"/api/v1/referrals?cursor={page['next']}&status=routing", user=sup)
    api.get("/api/v1/referrals?status=lost", 422, user=cw, check_request=False)
    api.get("/api/v1/referrals", 403, user=staff)

    # The partner's side: inbox, accept, follow up, decline, close.
    inbox = api.get("/api/v1/assignments", user=staff)["items"]
    api.get("/api/v1/assignments?status=offered", user=sup)
    api.get("/api/v1/assignments", 403, user=cw)
    by_referral = {a["referral_id"]: a for a in inbox}
    offer, other_offer = by_referral[first["id"]], by_referral[repeat["id"]]
    api.post(f"/api/v1/assignments/{offer['id']}/accept", user=staff)
    api.post(f"/api/v1/assignments/{offer['id']}/accept", 409, user=staff)
    api.post(f"/api/v1/assignments/{offer['id']}/accept", 403, user=cw)
    api.post("/api/v1/assignments/no-such-assignment/accept", 404, user=staff)
    api.post(
        f"/api/v1/assignments/{offer['id']}/followups",
        201,
        user=staff,
        json={"outcome": "contacted", "note": "spoke to her brother"},
    )
    api.post(f"/api/v1/assignments/{other_offer['id']}/followups", 409, user=staff, json={"outcome": "contacted"})
    api.post(
        f"/api/v1/assignments/{other_offer['id']}/decline",
        user=staff,
        json={"reason": "no_capacity", "note": "full this week"},
    )
    api.post(f"/api/v1/assignments/{other_offer['id']}/decline", 409, user=staff, json={"reason": "no_capacity"})
    with_notes = api.get(f"/api/v1/referrals/{first['id']}", user=staff)
    assert with_notes["assignments"][0]["followups"][0]["note"] == "spoke to her brother"
    api.post(
        f"/api/v1/assignments/{offer['id']}/close",
        user=staff,
        json={"outcome": "services_delivered", "services_delivered": ["medical"]},
    )
    api.post(f"/api/v1/assignments/{offer['id']}/close", 409, user=sup, json={"outcome": "other"})
    drain(services)

    # Deadlines: the later referral's offers were never answered.
    clock.advance(days=8)
    overdue = api.get("/api/v1/deadlines/overdue?limit=1", user=sup)
    assert overdue["items"] and overdue["next"]
    api.get(f"/api/v1/deadlines/overdue?cursor={overdue['next']}", user=sup)
    api.get("/api/v1/deadlines/overdue", 403, user=cw)
    api.get("/api/v1/deadlines/policy", user=sup)
    api.get("/api/v1/reports/sla?from=2026-01-01", user=sup)
    api.get("/api/v1/reports/sla?from=someday", 422, user=sup, check_request=False)
    api.get("/api/v1/reports/statistics?by=district,month", user=sup)
    api.get("/api/v1/reports/statistics?by=name", 422, user=sup)
    api.get("/api/v1/reports/statistics", 403, user=cw)

    # Withdraw, re-open, withdraw consent.
    api.post(f"/api/v1/referrals/{later['id']}/withdraw", user=cw, json={"note": "moved away"})
    api.post(f"/api/v1/referrals/{later['id']}/withdraw", 409, user=cw)
    api.post(f"/api/v1/referrals/{later['id']}/reopen", user=cw, json={"note": "back again"})
    api.post(f"/api/v1/referrals/{first['id']}/reopen", 409, user=cw, json={"note": "closed"})
    api.post(f"/api/v1/referrals/{later['id']}/reopen", 422, user=cw, json={}, check_request=False)
    api.post(f"/api/v1/referrals/{later['id']}/withdraw", 403, user=other_cw)
    api.post(f"/api/v1/referrals/{later['id']}/consent/withdraw", user=cw)
    api.post(f"/api/v1/referrals/{later['id']}/consent/withdraw", 409, user=cw, json={"note": "again"})
    api.post("/api/v1/referrals/no-such-referral/consent/withdraw", 404, user=cw)

    # Possible duplicates: the queue, confirming one pair, dismissing another.
    # Same phone as the first; no date of birth, so whether she is a minor is unknown (null).
    undated = api.post(
        "/api/v1/referrals", 201, user=cw, json=referral_body(subject__cnic=None, subject__date_of_birth=None)
    )
    assert api.get(f"/api/v1/referrals/{undated['id']}", user=cw)["subject"]["is_minor"] is None
    pairs = api.get("/api/v1/duplicates?limit=2", user=sup)["items"]
    assert len(pairs) == 2
    api.get("/api/v1/duplicates", 403, user=cw)
    api.get("/api/v1/duplicates?status=unknown", 422, user=sup, check_request=False)
    confirmed = api.post(f"/api/v1/duplicates/{pairs[0]['id']}/confirm", user=sup)
    assert confirmed["person_id"]
    api.post(f"/api/v1/duplicates/{pairs[0]['id']}/dismiss", 409, user=sup, json={})
    api.post(f"/api/v1/duplicates/{pairs[1]['id']}/dismiss", user=sup, json={})
    api.post(f"/api/v1/duplicates/{pairs[1]['id']}/confirm", 403, user=cw)
    api.post("/api/v1/duplicates/no-such-pair/confirm", 404, user=sup)
    api.get("/api/v1/duplicates?status=confirmed", user=sup)
    linked = api.get(f"/api/v1/referrals/{first['id']}", user=sup)
    assert linked["linked_referrals"]

    # An erased person's referral still reads, with every personal field null.
    erase_subject(services, later["subject_id"])
    erased = api.get(f"/api/v1/referrals/{later['id']}", user=cw)
    assert erased["subject"]["erased"] is True and erased["incident"]["erased"] is True
    api.get("/api/v1/referrals", user=cw)
    api.get("/api/v1/duplicates?status=dismissed", user=sup)
    api.get("/api/v1/duplicates?limit=200", user=sup)

    # Deliveries to a partner's own system (admins): the recent list, and sending one again.
    with services.uow() as uow:
        now = clock.now()
        uow.session.add(
            Notification(
                id="msg_doc",
                partner_id=MEDICAL,
                channel="webhook",
                event_id="e-doc",
                event_type="assignment.offered",
                payload={},
                status="parked",
                attempts=30,
                last_error="HTTP 500",
                last_status=500,
                retry_since=now,
                created_at=now,
                last_attempt_at=now,
            )
        )
        uow.commit()
    parked = api.get(f"/api/v1/partners/{MEDICAL}/deliveries?status=parked&limit=5", user=admin)["items"]
    assert [d["id"] for d in parked] == ["msg_doc"]
    api.get(f"/api/v1/partners/{MEDICAL}/deliveries", 403, user=sup)
    api.get("/api/v1/partners/p-nobody/deliveries", 404, user=admin)
    api.get(f"/api/v1/partners/{MEDICAL}/deliveries?status=lost", 422, user=admin, check_request=False)
    assert api.post(f"/api/v1/partners/{MEDICAL}/deliveries/msg_doc/replay", user=admin)["status"] == "pending"
    api.post(f"/api/v1/partners/{MEDICAL}/deliveries/msg_none/replay", 404, user=admin)
    api.post(f"/api/v1/partners/{MEDICAL}/deliveries/msg_doc/replay", 403, user=sup)
    # The audit log, for auditors: entries, export, access reports, verification, checkpoint, proofs.
    auditor = make_user("auditor")
    integrate_all(services)
    entries = api.get(f"/api/v1/audit?referral_id={first['id']}&limit=2", user=auditor)
    assert len(entries["items"]) == 2 and entries["next"]
    api.get(f"/api/v1/audit?cursor={entries['next']}&action=referral.read&since=2000-01-01T00:00:00Z", user=auditor)
    api.get(f"/api/v1/audit?subject_id={later['subject_id']}", user=auditor)  # erased: details read as erased
    api.get("/api/v1/audit?since=not-a-time", 422, user=auditor, check_request=False)
    api.get("/api/v1/audit", 403, user=sup)
    api.get(f"/api/v1/audit/export.csv?actor_id={cw.actor.user_id}", user=auditor)
    api.get("/api/v1/audit/export.csv", 403, user=cw)
    api.get(f"/api/v1/audit/referrals/{first['id']}/access", user=auditor)
    api.get(f"/api/v1/audit/subjects/{later['subject_id']}/access", user=auditor)
    api.get(f"/api/v1/audit/subjects/{later['subject_id']}/access", 403, user=staff)
    report = api.get("/api/v1/audit/verify", user=auditor)
    assert report["ok"] is True and report["size"] > 2
    api.get("/api/v1/audit/verify", 403, user=admin)
    api.get("/api/v1/audit/checkpoint", user=auditor)
    size = report["size"]
    api.get(f"/api/v1/audit/proof/inclusion?index=1&size={size}", user=auditor)
    api.get(f"/api/v1/audit/proof/inclusion?index={size}&size={size}", 404, user=auditor)
    api.get("/api/v1/audit/proof/inclusion?index=0", 422, user=auditor, check_request=False)
    api.get(f"/api/v1/audit/proof/consistency?first=2&second={size}", user=auditor)
    api.get(f"/api/v1/audit/proof/consistency?first=1&second={size + 1}", 404, user=auditor)
    api.get(f"/api/v1/audit/proof/consistency?first={size}&second=1", 422, user=auditor)

    # Every documented success answer was produced and checked, but /metrics (below, with a token).
    missing = _successes(build_spec(app)) - api.seen - {("/metrics", "GET", 200)}
    assert sorted(missing) == []


@pytest.fixture
def metrics_app(home: Path, clock: FakeClock) -> Iterator[Flask]:
    services = bootstrap(embedded_settings(home, REFERRAL_METRICS_TOKEN="scrape-" + "t" * 40), clock=clock)
    yield create_app(services, {"TESTING": True})
    services.dispose()


def test_metrics_answers_match_the_document(metrics_app: Flask) -> None:
    api = CheckedClient(metrics_app)
    text = api.get("/metrics", headers={"Authorization": "Bearer scrape-" + "t" * 40})
    assert text is None  # text/plain, not JSON
    api.get("/metrics", 401, headers={"Authorization": "Bearer wrong"})


def test_rate_limited_api_answers_match_the_document(services: Services) -> None:
    app = create_app(services, {"TESTING": True, "RATELIMIT_ENABLED": True})
    api = CheckedClient(app)
    bad = {"Authorization": "Bearer guessed-token"}
    for _ in range(20):
        api.get("/api/v1/assignments", 401, headers=bad, check_request=False)
    api.get("/api/v1/assignments", 429, headers=bad, check_request=False)
    api.get("/api/v1/openapi.json", 429)


def test_openapi_is_served_without_a_token(client: Any) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json()["info"]["title"] == "referral-service"


def test_database_down_answers_match_the_document(
    api: CheckedClient, services: Services, home: Path, make_user: Any
) -> None:
    cw = make_user("caseworker")
    services.engine.dispose()
    for path in home.glob("referrals.sqlite3*"):
        path.unlink()
    (home / "referrals.sqlite3").mkdir()  # a directory where the database file was: unopenable
    api.get("/readyz", 503)
    api.get("/api/v1/referrals", 503, user=cw)


def test_damaged_record_answers_match_the_document(
    api: CheckedClient, services: Services, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, sup, staff = make_user("caseworker"), make_user("supervisor"), make_user("partner", partner_id=MEDICAL)
    referral = api.post(
        "/api/v1/referrals",
        201,
        user=cw,
        json=referral_body(consent={"given": True, "method": "written", "share": ["contact", "identity", "incident"]}),
    )
    api.post("/api/v1/referrals", 201, user=cw, json=referral_body(subject__phone=None))  # a possible duplicate
    drain(services)
    [offer] = [a for a in api.get("/api/v1/assignments", user=staff)["items"] if a["referral_id"] == referral["id"]]
    api.post(f"/api/v1/assignments/{offer['id']}/accept", user=staff)
    api.post(
        f"/api/v1/assignments/{offer['id']}/followups",
        201,
        user=staff,
        json={"outcome": "contacted", "note": "met at the clinic"},
    )
    damage_key_of(services, referral["subject_id"])  # every sealed field of this person now fails to open

    shown = api.get(f"/api/v1/referrals/{referral['id']}", user=cw)
    assert shown["subject"]["damaged"] is True and shown["subject"]["damaged_fields"]
    assert shown["incident"]["damaged"] is True
    assert shown["assignments"][0]["followups"][0]["note_damaged"] is True
    api.get(f"/api/v1/referrals/{referral['id']}", user=staff)
    api.get("/api/v1/referrals", user=cw)
    assert any(a["subject_damaged"] for a in api.get("/api/v1/assignments", user=staff)["items"])
    api.get("/api/v1/duplicates", user=sup)
