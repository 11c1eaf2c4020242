"""Every validation rule of the referral API: accepted forms, rejected forms, and never a partial write.

A rejected request answers with the contract's error shape, names the failing field, and leaves the
database exactly as it was (no subject, referral, key, index or outbox row).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.db.models import BlindIndex, IdempotencyKey, OutboxMessage, Referral, Subject
from schemas.referrals import NARRATIVE_MAX, PAKISTAN_TIME
from tests.factories import DELETE, referral_body

# "Today" is the date in Pakistan, where caseworkers work (see schemas.referrals.PAKISTAN_TIME).
# Resolved when each request is made, not at import: a run that straddles midnight in Pakistan (19:00 UTC)
# would otherwise send yesterday's "tomorrow", which is today by then.
TODAY, TOMORROW = "<today in Pakistan>", "<tomorrow in Pakistan>"


def dated(value: Any) -> Any:
    """`value` with TODAY and TOMORROW replaced by the dates they name now."""
    if isinstance(value, dict):
        return {k: dated(v) for k, v in value.items()}
    if value in (TODAY, TOMORROW):
        return (datetime.now(PAKISTAN_TIME).date() + timedelta(days=int(value == TOMORROW))).isoformat()
    return value


def row_counts(services: Any) -> dict[str, int]:
    with services.uow() as uow:
        return {
            model.__name__: int(uow.session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Referral, Subject, BlindIndex, IdempotencyKey, OutboxMessage)
        }


def error_of(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "fields"} <= set(error)
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    if code is not None:
        assert error["code"] == code
    return error


def field_at(fields: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = fields
    for part in path:
        assert isinstance(node, dict) and part in node, f"no error at {'.'.join(path)}: {fields}"
        node = node[part]
    return node


@pytest.fixture
def caseworker(make_user: Any) -> Any:
    return make_user("caseworker")


# -- field rules ------------------------------------------------------------------------------------
REJECTED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("cnic_too_short", {"subject__cnic": "17301-123456-2"}, ("subject", "cnic")),
    ("cnic_letters", {"subject__cnic": "ABCDE-1234567-2"}, ("subject", "cnic")),
    ("cnic_14_digits", {"subject__cnic": "17301123456723"}, ("subject", "cnic")),
    ("cnic_wrong_dashes", {"subject__cnic": "173011-234567-2"}, ("subject", "cnic")),
    ("cnic_not_a_string", {"subject__cnic": 1730112345672}, ("subject", "cnic")),
    ("phone_garbage", {"subject__phone": "call the neighbour"}, ("subject", "phone")),
    ("phone_too_short", {"subject__phone": "+92300123"}, ("subject", "phone")),
    ("phone_pk_too_long", {"subject__phone": "+9230012345678"}, ("subject", "phone")),
    ("phone_local_without_trunk", {"subject__phone": "3001234567"}, ("subject", "phone")),
    ("dob_in_future", {"subject__date_of_birth": TOMORROW}, ("subject", "date_of_birth")),
    ("dob_not_a_date", {"subject__date_of_birth": "12/04/1990"}, ("subject", "date_of_birth")),
    ("dob_before_1900", {"subject__date_of_birth": "1850-01-01"}, ("subject", "date_of_birth")),
    ("incident_date_in_future", {"incident__date": TOMORROW}, ("incident", "date")),
    ("incident_date_not_a_date", {"incident__date": "yesterday"}, ("incident", "date")),
    ("narrative_too_long", {"incident__narrative": "x" * (NARRATIVE_MAX + 1)}, ("incident", "narrative")),
    ("unknown_province", {"subject__province": "Atlantis"}, ("subject", "province")),
    ("unknown_district", {"subject__district": "Gotham"}, ("subject", "district")),
    (
        "district_not_in_province",
        {"subject__province": "Punjab", "subject__district": "Peshawar"},
        ("subject", "district"),
    ),
    ("district_missing", {"subject__district": DELETE}, ("subject", "district")),
    ("full_name_missing", {"subject__full_name": DELETE}, ("subject", "full_name")),
    ("full_name_blank", {"subject__full_name": "   "}, ("subject", "full_name")),
    ("full_name_null", {"subject__full_name": None}, ("subject", "full_name")),
    ("full_name_zero_width_spaces", {"subject__full_name": "\u200b\u200b\u200b"}, ("subject", "full_name")),
    ("full_name_direction_override", {"subject__full_name": "\u202e"}, ("subject", "full_name")),
    ("full_name_invisible_and_spaces", {"subject__full_name": "\u2060 \ufeff\u3000\u200d"}, ("subject", "full_name")),
    ("full_name_control_characters", {"subject__full_name": "\u0007\u001b"}, ("subject", "full_name")),
    ("sex_unknown", {"subject__sex": "unknown"}, ("subject", "sex")),
    ("language_unknown", {"subject__preferred_language": "klingon"}, ("subject", "preferred_language")),
    ("needs_empty", {"needs": []}, ("needs",)),
    ("needs_unknown", {"needs": ["medical", "teleportation"]}, ("needs",)),
    ("needs_missing", {"needs": DELETE}, ("needs",)),
    ("needs_a_string", {"needs": "medical"}, ("needs",)),
    ("risk_level_unknown", {"risk_level": "extreme"}, ("risk_level",)),
    ("risk_level_missing", {"risk_level": DELETE}, ("risk_level",)),
    ("risk_level_a_number", {"risk_level": 3}, ("risk_level",)),
    ("consent_missing", {"consent": DELETE}, ("consent",)),
    ("consent_given_missing", {"consent__given": DELETE}, ("consent", "given")),
    ("consent_given_not_boolean", {"consent__given": "perhaps"}, ("consent", "given")),
    ("consent_given_without_method", {"consent__method": DELETE}, ("consent", "method")),
    ("consent_given_with_null_method", {"consent__method": None}, ("consent", "method")),
    ("consent_method_unknown", {"consent__method": "telepathy"}, ("consent", "method")),
    ("consent_share_unknown", {"consent__share": ["contact", "everything"]}, ("consent", "share")),
    ("consent_share_a_string", {"consent__share": "contact"}, ("consent", "share")),
    ("staff_sex_unknown", {"preferences__staff_sex": "robot"}, ("preferences", "staff_sex")),
    # An unknown key is counted where it was, never echoed (it is the client's text: it could be a name).
    ("unknown_top_level_field", {"nickname": "Zee"}, ("_unknown",)),
    ("unknown_subject_field", {"subject__nickname": "Zee"}, ("subject", "_unknown")),
    ("unknown_incident_field", {"incident__weapon": "ied"}, ("incident", "_unknown")),
    ("unknown_consent_field", {"consent__expires": "never"}, ("consent", "_unknown")),
    ("subject_a_string", {"subject": "Zarmeena Khattak"}, ("subject",)),
    ("subject_missing", {"subject": DELETE}, ("subject",)),
    ("incident_a_list", {"incident": ["bombing"]}, ("incident",)),
    ("consent_a_boolean", {"consent": True}, ("consent",)),
]


@pytest.mark.parametrize(("overrides", "path"), [(o, p) for _, o, p in REJECTED], ids=[n for n, _, _ in REJECTED])
def test_invalid_referral_is_rejected_naming_the_field_and_writes_nothing(
    services: Any, client: Any, caseworker: Any, overrides: dict[str, Any], path: tuple[str, ...]
) -> None:
    before = row_counts(services)
    resp = client.post("/api/v1/referrals", json=referral_body(**dated(overrides)), headers=caseworker.headers)
    error = error_of(resp, 422, "validation_failed")
    messages = field_at(error["fields"], path)
    assert messages, error
    assert row_counts(services) == before


def test_an_unknown_field_is_never_echoed_but_a_likely_typo_is_pointed_to_the_right_name(
    services: Any, client: Any, caseworker: Any
) -> None:
    body = referral_body(subject__nickname="Zee")
    body["subject"]["ful_name"] = body["subject"].pop("full_name")
    body["Zarmeena Khattak"] = 1
    error = error_of(client.post("/api/v1/referrals", json=body, headers=caseworker.headers), 422)
    text = json.dumps(error)
    assert "nickname" not in text and "ful_name" not in text and "Zarmeena" not in text
    assert error["fields"]["subject"]["_unknown"] == [
        "2 field(s) that this object does not have; did you mean full_name? (see /api/v1/openapi.json)"
    ]
    assert error["fields"]["subject"]["full_name"] == ["Missing data for required field."]
    assert error["fields"]["_unknown"] == ["1 field(s) that this object does not have (see /api/v1/openapi.json)"]


def test_several_bad_fields_are_reported_together(services: Any, client: Any, caseworker: Any) -> None:
    body = referral_body(subject__cnic="123", subject__phone="nope", needs=[], risk_level="extreme")
    error = error_of(client.post("/api/v1/referrals", json=body, headers=caseworker.headers), 422)
    assert {"needs", "risk_level", "subject"} <= set(error["fields"])
    assert {"cnic", "phone"} <= set(error["fields"]["subject"])


ACCEPTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("cnic_with_dashes", {"subject__cnic": "17301-1234567-2"}, {"cnic": "17301-1234567-2"}),
    ("cnic_without_dashes", {"subject__cnic": "1730112345672"}, {"cnic": "17301-1234567-2"}),
    ("cnic_with_spaces_around", {"subject__cnic": " 17301-1234567-2 "}, {"cnic": "17301-1234567-2"}),
    ("phone_e164", {"subject__phone": "+923001234567"}, {"phone": "+923001234567"}),
    ("phone_local_mobile", {"subject__phone": "03001234567"}, {"phone": "+923001234567"}),
    ("phone_with_spaces", {"subject__phone": "+92 300 1234567"}, {"phone": "+923001234567"}),
    ("phone_with_00_prefix", {"subject__phone": "00923001234567"}, {"phone": "+923001234567"}),
    ("phone_with_dashes", {"subject__phone": "0300-1234567"}, {"phone": "+923001234567"}),
    ("cnic_in_urdu_digits", {"subject__cnic": "۱۷۳۰۱-۱۲۳۴۵۶۷-۲"}, {"cnic": "17301-1234567-2"}),
    ("cnic_in_arabic_indic_digits", {"subject__cnic": "١٧٣٠١١٢٣٤٥٦٧٢"}, {"cnic": "17301-1234567-2"}),
    ("phone_in_urdu_digits", {"subject__phone": "۰۳۰۰-۱۲۳۴۵۶۷"}, {"phone": "+923001234567"}),
    ("name_in_urdu_with_a_joiner", {"subject__full_name": "ثمینہ\u200c بی بی"}, {"full_name": "ثمینہ\u200c بی بی"}),
    (
        "places_any_case",
        {"subject__province": "khyber PAKHTUNKHWA", "subject__district": "peshawar"},
        {"province": "Khyber Pakhtunkhwa", "district": "Peshawar"},
    ),
    (
        "district_alone_finds_province",
        {"subject__province": DELETE, "subject__district": "Quetta"},
        {"province": "Balochistan", "district": "Quetta"},
    ),
    ("dob_today", {"subject__date_of_birth": TODAY}, {"date_of_birth": TODAY, "is_minor": True}),
    ("no_cnic_no_phone", {"subject__cnic": None, "subject__phone": None}, {"cnic": None, "phone": None}),
    (
        "minimal_subject",
        {"subject": {"full_name": "Bibi Gul", "district": "Swat"}},
        {"full_name": "Bibi Gul", "district": "Swat", "province": "Khyber Pakhtunkhwa", "sex": "undisclosed"},
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), [(o, e) for _, o, e in ACCEPTED], ids=[n for n, _, _ in ACCEPTED])
def test_valid_forms_are_accepted_and_stored_normalised(
    services: Any, client: Any, caseworker: Any, overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    resp = client.post("/api/v1/referrals", json=referral_body(**dated(overrides)), headers=caseworker.headers)
    assert resp.status_code == 201, resp.get_json()
    shown = client.get(f"/api/v1/referrals/{resp.get_json()['id']}", headers=caseworker.headers).get_json()
    for key, value in dated(expected).items():
        assert shown["subject"][key] == value, key


def test_narrative_at_the_limit_and_incident_dated_today_are_accepted(client: Any, caseworker: Any) -> None:
    today = dated(TODAY)
    body = referral_body(incident__narrative="n" * NARRATIVE_MAX, incident__date=today)
    resp = client.post("/api/v1/referrals", json=body, headers=caseworker.headers)
    assert resp.status_code == 201, resp.get_json()
    shown = client.get(f"/api/v1/referrals/{resp.get_json()['id']}", headers=caseworker.headers).get_json()
    assert len(shown["incident"]["narrative"]) == NARRATIVE_MAX and shown["incident"]["date"] == today


def test_consent_not_given_needs_no_method(client: Any, caseworker: Any) -> None:
    body = referral_body(consent={"given": False})
    resp = client.post("/api/v1/referrals", json=body, headers=caseworker.headers)
    assert resp.status_code == 201, resp.get_json()


# -- request-level rules ----------------------------------------------------------------------------
def test_malformed_json_is_400(services: Any, client: Any, caseworker: Any) -> None:
    before = row_counts(services)
    resp = client.post(
        "/api/v1/referrals",
        data='{"subject": {"full_name": ',
        content_type="application/json",
        headers=caseworker.headers,
    )
    error_of(resp, 400, "malformed_json")
    assert row_counts(services) == before


@pytest.mark.parametrize("payload", ["[]", "[1, 2]", '"a referral"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_400(services: Any, client: Any, caseworker: Any, payload: str) -> None:
    before = row_counts(services)
    resp = client.post("/api/v1/referrals", data=payload, content_type="application/json", headers=caseworker.headers)
    error_of(resp, 400, "malformed_json")
    assert row_counts(services) == before


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_body_without_json_content_type_is_400(
    services: Any, client: Any, caseworker: Any, content_type: str | None
) -> None:
    before = row_counts(services)
    kwargs: dict[str, Any] = {"data": json.dumps(referral_body()), "headers": caseworker.headers}
    if content_type:
        kwargs["content_type"] = content_type
    error_of(client.post("/api/v1/referrals", **kwargs), 400, "malformed_json")
    assert row_counts(services) == before


def test_empty_body_is_400(client: Any, caseworker: Any) -> None:
    resp = client.post("/api/v1/referrals", data="", content_type="application/json", headers=caseworker.headers)
    error_of(resp, 400, "malformed_json")


def test_body_too_large_is_413(services: Any, client: Any, caseworker: Any) -> None:
    before = row_counts(services)
    body = referral_body(incident__narrative="x" * 300_000)
    error_of(client.post("/api/v1/referrals", json=body, headers=caseworker.headers), 413, "payload_too_large")
    assert row_counts(services) == before


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer rs_unknown"}, {"Authorization": "Basic eDp5"}],
    ids=["missing", "unknown", "not_bearer"],
)
def test_missing_or_bad_token_is_401_before_the_body_is_read(
    services: Any, client: Any, headers: dict[str, str]
) -> None:
    before = row_counts(services)
    error_of(client.post("/api/v1/referrals", json=referral_body(), headers=headers), 401, "unauthenticated")
    error_of(
        client.post("/api/v1/referrals", data="{", content_type="application/json", headers=headers),
        401,
        "unauthenticated",
    )
    assert row_counts(services) == before


@pytest.mark.parametrize("role", ["partner", "auditor", "admin"])
def test_roles_that_may_not_submit_get_403_even_with_a_bad_body(
    services: Any, client: Any, make_user: Any, add_partner: Any, role: str
) -> None:
    add_partner()
    user = make_user(role, partner_id="p-peshawar-medical" if role == "partner" else None)
    before = row_counts(services)
    error_of(client.post("/api/v1/referrals", json={"needs": "x"}, headers=user.headers), 403, "forbidden")
    error_of(
        client.post("/api/v1/referrals", data="{", content_type="application/json", headers=user.headers),
        403,
        "forbidden",
    )
    assert row_counts(services) == before


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v1/referrals/x/y/z", "/api/v2/referrals"])
def test_unknown_route_is_404_json(client: Any, caseworker: Any, path: str) -> None:
    error_of(client.get(path, headers=caseworker.headers), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/referrals"),
        ("PUT", "/api/v1/referrals"),
        ("PATCH", "/api/v1/referrals/some-id"),
        ("GET", "/api/v1/assignments/some-id/accept"),
        ("DELETE", "/api/v1/partners"),
    ],
)
def test_wrong_method_is_405_json(client: Any, caseworker: Any, method: str, path: str) -> None:
    resp = client.open(path, method=method, headers=caseworker.headers)
    error_of(resp, 405, "method_not_allowed")
    assert "Allow" in resp.headers


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


BAD_LIST_QUERIES = [
    ("limit=abc", "limit"),
    ("limit=0", "limit"),
    ("limit=-1", "limit"),
    ("limit=201", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("cursor=!!!", "cursor"),
    ("cursor=bm90LWpzb24", "cursor"),
    (f"cursor={_cursor([1, 2])}", "cursor"),
    (f"cursor={_cursor({'a': 1})}", "cursor"),
    (f"cursor={_cursor(['2026-01-01T00:00:00+00:00'])}", "cursor"),
    (f"cursor={_cursor('x')}", "cursor"),
    ("status=lost", "status"),
    ("status=", "status"),  # sent empty is not left out (the fuzz found it answered as the unfiltered list)
]


@pytest.mark.parametrize(("query", "field"), BAD_LIST_QUERIES, ids=[q for q, _ in BAD_LIST_QUERIES])
@pytest.mark.parametrize("list_path", ["/api/v1/referrals", "/api/v1/assignments"])
def test_bad_list_parameters_are_422(client: Any, make_user: Any, query: str, field: str, list_path: str) -> None:
    supervisor = make_user("supervisor")
    error = error_of(client.get(f"{list_path}?{query}", headers=supervisor.headers), 422, "validation_failed")
    assert field in error["fields"]


def _raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# Cursors a client forged rather than received: each once reached the database layer (or the JSON
# parser's recursion limit) and answered 500; they are as invalid as any other bad cursor.
FORGED_CURSORS = {
    "naive-datetime": _cursor(["2026-01-01T00:00:00", "x"]),
    "year-9999-west-of-utc": _cursor(["9999-12-31T23:00:00-05:00", "x"]),
    "year-1-east-of-utc": _cursor(["0001-01-01T00:00:00+05:00", "x"]),
    "deeply-nested": _raw_cursor("[" * 5000 + "]" * 5000),
    "huge-integer": _raw_cursor('["2026-01-01T00:00:00+00:00", ' + "9" * 5000 + "]"),
    "huge-float": _raw_cursor("[1e999, 1e999]"),
    "number-as-id": _cursor(["2026-01-01T00:00:00+00:00", 10**30]),
    "object-with-two-keys": _cursor({"2026-01-01T00:00:00+00:00": 1, "x": 2}),
    "two-character-string": _cursor("ab"),
    "three-items": _cursor(["2026-01-01T00:00:00+00:00", "x", "y"]),
    "null": _cursor(None),
    "overlong": _cursor(["2026-01-01T00:00:00+00:00", "x" * 5000]),
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
@pytest.mark.parametrize(
    "list_path", ["/api/v1/referrals", "/api/v1/assignments", "/api/v1/deadlines/overdue", "/api/v1/partners"]
)
def test_forged_cursors_are_refused_like_any_bad_cursor(
    client: Any, make_user: Any, cursor: str, list_path: str
) -> None:
    supervisor = make_user("supervisor")
    error = error_of(client.get(f"{list_path}?cursor={cursor}", headers=supervisor.headers), 422, "validation_failed")
    assert "cursor" in error["fields"]


def test_idempotency_key_too_long_is_422_and_writes_nothing(services: Any, client: Any, caseworker: Any) -> None:
    before = row_counts(services)
    resp = client.post(
        "/api/v1/referrals", json=referral_body(), headers={**caseworker.headers, "Idempotency-Key": "k" * 201}
    )
    error = error_of(resp, 422, "validation_failed")
    assert "Idempotency-Key" in error["fields"]
    assert row_counts(services) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("decline", {"reason": "busy"}, "reason"),
        ("decline", {"reason": "other"}, "note"),
        ("decline", {}, "reason"),
        ("close", {"outcome": "done"}, "outcome"),
        ("followups", {"outcome": ""}, "outcome"),
        ("followups", {"outcome": "contacted", "extra": 1}, "_unknown"),
    ],
)
def test_partner_action_bodies_are_validated(
    services: Any, client: Any, make_user: Any, add_partner: Any, path: str, body: dict[str, Any], field: str
) -> None:
    from tests.pipeline import drain

    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id="p-peshawar-medical")
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).get_json()["id"]
    drain(services)
    [a] = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()["assignments"]
    if path == "followups":
        assert client.post(f"/api/v1/assignments/{a['id']}/accept", headers=staff.headers).status_code == 200
    error = error_of(client.post(f"/api/v1/assignments/{a['id']}/{path}", json=body, headers=staff.headers), 422)
    assert field in error["fields"]
    shown = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()
    assert shown["assignments"][0]["status"] == ("accepted" if path == "followups" else "offered")
    assert shown["assignments"][0]["followups"] == []


def test_partner_directory_entries_are_validated(services: Any, client: Any, make_user: Any) -> None:
    admin = make_user("admin")
    bad = {"id": "Bad Id!", "name": "", "services": ["astrology"], "capacity": -1, "districts": ["Gotham"]}
    error = error_of(client.post("/api/v1/partners", json=bad, headers=admin.headers), 422)
    assert {"id", "name", "services", "capacity"} <= set(error["fields"])
    assert client.get("/api/v1/partners", headers=admin.headers).get_json()["items"] == []


@pytest.mark.parametrize(
    "payload", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 20_000 + "1" + "}" * 20_000], ids=["deep_list", "deep_object"]
)
@pytest.mark.parametrize("path", ["/api/v1/referrals", "/api/v1/referrals/{rid}/consent/withdraw"])
def test_deeply_nested_json_is_400_not_500(
    services: Any, client: Any, caseworker: Any, payload: str, path: str
) -> None:
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()["id"]
    before = row_counts(services)
    resp = client.post(path.format(rid=rid), data=payload, content_type="application/json", headers=caseworker.headers)
    error_of(resp, 400, "malformed_json")
    assert row_counts(services) == before


@pytest.mark.parametrize("path", ["/api/v1/referrals/{rid}/consent/withdraw", "/api/v1/referrals/{rid}/withdraw"])
@pytest.mark.parametrize("payload", ["[1]", '"note"', "{"], ids=["list", "string", "malformed"])
def test_withdrawal_bodies_must_be_objects_when_sent(
    services: Any, client: Any, caseworker: Any, path: str, payload: str
) -> None:
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()["id"]
    resp = client.post(path.format(rid=rid), data=payload, content_type="application/json", headers=caseworker.headers)
    error_of(resp, 400, "malformed_json")
    shown = client.get(f"/api/v1/referrals/{rid}", headers=caseworker.headers).get_json()
    assert shown["status"] == "submitted"


@pytest.mark.parametrize("path", ["/api/v1/referrals/{rid}/consent/withdraw", "/api/v1/referrals/{rid}/withdraw"])
def test_withdrawal_needs_no_body(client: Any, caseworker: Any, path: str) -> None:
    rid = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()["id"]
    resp = client.post(path.format(rid=rid), headers=caseworker.headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "withdrawn"


@pytest.mark.parametrize("capacity", ["1.5", "true", '"10"', "1e400", "NaN"])
def test_partner_capacity_must_be_a_whole_number(client: Any, make_user: Any, capacity: str) -> None:
    from tests.factories import partner

    admin = make_user("admin")
    raw = json.dumps(partner()).replace('"capacity": 10', f'"capacity": {capacity}')
    error = error_of(
        client.post("/api/v1/partners", data=raw, content_type="application/json", headers=admin.headers), 422
    )
    assert "capacity" in error["fields"]


# Pakistan is UTC+5 all year: from 19:00 UTC the date in Karachi is already tomorrow's.
KARACHI_EVENING_UTC = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "path"),
    [("incident__date", ("incident", "date")), ("subject__date_of_birth", ("subject", "date_of_birth"))],
)
def test_todays_date_in_pakistan_is_not_in_the_future(
    client: Any, caseworker: Any, monkeypatch: Any, field: str, path: tuple[str, ...]
) -> None:
    import schemas.referrals

    monkeypatch.setattr(schemas.referrals, "utcnow", lambda: KARACHI_EVENING_UTC)
    today_in_karachi = client.post(
        "/api/v1/referrals", json=referral_body(**{field: "2026-11-25"}), headers=caseworker.headers
    )
    assert today_in_karachi.status_code == 201, today_in_karachi.get_json()
    tomorrow_in_karachi = client.post(
        "/api/v1/referrals", json=referral_body(**{field: "2026-11-26"}), headers=caseworker.headers
    )
    assert field_at(error_of(tomorrow_in_karachi, 422)["fields"], path)


def test_every_subject_problem_is_reported_at_once(client: Any, make_user: Any) -> None:
    cw = make_user("caseworker")
    body = referral_body(
        subject__cnic="12-34", subject__phone="call me", subject__district="Atlantis", subject__full_name=""
    )
    resp = client.post("/api/v1/referrals", json=body, headers=cw.headers)
    assert resp.status_code == 422
    assert set(resp.get_json()["error"]["fields"]["subject"]) >= {"cnic", "phone", "district", "full_name"}


def test_a_name_of_only_invisible_characters_is_refused_with_a_clear_message(
    services: Any, client: Any, caseworker: Any
) -> None:
    before = row_counts(services)
    body = referral_body(subject__full_name="\u200b\u202e\u200f")
    error = error_of(client.post("/api/v1/referrals", json=body, headers=caseworker.headers), 422)
    assert error["fields"]["subject"]["full_name"] == ["must contain letters, not only spaces or invisible characters"]
    assert row_counts(services) == before
