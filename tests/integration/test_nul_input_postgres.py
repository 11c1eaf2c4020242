"""U+0000 from a client on PostgreSQL (whose text cannot hold it): a clear 4xx, never a 500.

Found by bench/soak.py's probes: `GET /api/v1/referrals/a%00b` and `POST /api/v1/partners` with
`"name": "Nul\\u0000Name"` were 500s (psycopg's DataError) on the production profile.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.app import create_app
from referral_service.bootstrap import Services
from referral_service.db.models import Partner, Referral
from referral_service.domain.errors import Unauthenticated
from referral_service.services import users
from tests.factories import partner, referral_body

pytestmark = pytest.mark.integration


@pytest.fixture
def api(pg_services: Services) -> Any:
    app = create_app(pg_services, {"TESTING": True, "RATELIMIT_ENABLED": False})
    return app.test_client()


def _token(services: Services, role: str, partner_id: str | None = None) -> dict[str, str]:
    created = users.create_user(services, name=f"nul-{uuid.uuid4().hex[:8]}", role=role, partner_id=partner_id)
    return {"Authorization": f"Bearer {created['token']}"}


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("caseworker", "GET", "/api/v1/referrals/a%00b", None),
        ("caseworker", "POST", "/api/v1/referrals/a%00b/consent/withdraw", {}),
        ("caseworker", "POST", "/api/v1/referrals/a%00b/withdraw", {"note": "mistake"}),
        ("partner", "POST", "/api/v1/assignments/a%00b/accept", None),
        ("partner", "POST", "/api/v1/assignments/a%00b/decline", {"reason": "other", "note": "x"}),
        ("supervisor", "POST", "/api/v1/duplicates/a%00b/confirm", None),
        ("caseworker", "GET", "/api/v1/partners/a%00b", None),
    ],
)
def test_an_id_with_nul_is_not_found(
    pg_services: Services, api: Any, role: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    partner_id = None
    if role == "partner":
        partner_id = "nul-partner"
        api.post("/api/v1/partners", json=partner(id=partner_id), headers=_token(pg_services, "admin"))
    answer = api.open(path, method=method, json=body, headers=_token(pg_services, role, partner_id))
    assert answer.status_code == 404, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "not_found"


def test_nul_in_a_partner_name_is_refused_and_nothing_is_stored(pg_services: Services, api: Any) -> None:
    answer = api.post(
        "/api/v1/partners", json=partner(id="nul-name", name="Nul\u0000Name"), headers=_token(pg_services, "admin")
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "malformed_json"
    with pg_services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Partner)) == 0


@pytest.mark.parametrize(
    "where",
    [("subject", "full_name"), ("incident", "narrative"), ("incident", "type"), ("subject", "address")],
)
def test_nul_in_a_referral_is_refused_with_the_rest_valid(
    pg_services: Services, api: Any, where: tuple[str, str]
) -> None:
    body = referral_body(subject__cnic=None, subject__phone=None)
    body[where[0]][where[1]] = "before\u0000after"
    answer = api.post("/api/v1/referrals", json=body, headers=_token(pg_services, "caseworker"))
    assert answer.status_code == 400, answer.get_data(as_text=True)
    # The message says what is wrong without quoting the text (it may be a person's data).
    assert "before" not in answer.get_data(as_text=True)
    with pg_services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Referral)) == 0


def test_nul_in_a_key_and_nested_deep_is_found(pg_services: Services, api: Any) -> None:
    body = referral_body(subject__cnic=None, subject__phone=None)
    body["consent"]["share"] = [["contact\u0000"]]
    body["preferences"] = {"staff\u0000sex": "any"}
    raw = json.dumps(body)
    answer = api.post(
        "/api/v1/referrals", data=raw, content_type="application/json", headers=_token(pg_services, "caseworker")
    )
    assert answer.status_code == 400
    assert "NUL" in answer.get_json()["error"]["message"]


def test_the_same_valid_body_without_nul_is_taken(pg_services: Services, api: Any) -> None:
    body = referral_body(subject__cnic=None, subject__phone=None)
    answer = api.post("/api/v1/referrals", json=body, headers=_token(pg_services, "caseworker"))
    assert answer.status_code == 201, answer.get_data(as_text=True)


def test_a_sign_in_name_with_nul_is_refused_like_an_unknown_one(pg_services: Services, api: Any) -> None:
    from tests.e2e.test_web_forms import csrf_token

    users.create_user(pg_services, name="cw-web", role="caseworker", password="correct horse battery staple")
    answers = []
    for name in ("cw-web\u0000", "no-such-user"):
        token = csrf_token(api, "/login")
        answers.append(api.post("/login", data={"name": name, "password": "wrong", "csrf_token": token}))
    assert answers[0].status_code == answers[1].status_code < 500
    with pytest.raises(Unauthenticated):
        users.sign_in(pg_services, "cw-web\u0000", "correct horse battery staple")


@pytest.mark.parametrize("literal", ["\\ud800", "\\udfff", "\\ud83d\\ud83d"], ids=["high", "low", "two_highs"])
def test_a_lone_surrogate_in_a_referral_is_refused_on_postgresql_too(
    pg_services: Services, api: Any, literal: str
) -> None:
    body = referral_body(subject__cnic=None, subject__phone=None)
    raw = json.dumps(body).replace('"Injured at', f'"{literal} Injured at', 1)
    assert literal in raw
    answer = api.post(
        "/api/v1/referrals", data=raw, content_type="application/json", headers=_token(pg_services, "caseworker")
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "malformed_json"
    with pg_services.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Referral)) == 0
