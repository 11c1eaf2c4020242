"""Who may call what: every contract endpoint × every role, and what a partner gets to see.

The matrix below is the contract's "who" column made executable. Each cell is the status the role gets;
a forbidden call must answer with the JSON error shape and must not change anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.audit.log import AuditFilter
from referral_service.db.models import Assignment, Notification, Partner, PossibleDuplicate, Referral, Subject
from referral_service.services import users
from referral_service.services.audit import integrate_all
from referral_service.services.subjects import erase_subject
from tests.factories import partner, referral_body
from tests.pipeline import drain

MEDICAL = "p-peshawar-medical"  # the factory partner: serves medical in Peshawar
QUETTA = "p-quetta-legal"  # a partner elsewhere that never gets this case
DELIVERY = "msg_matrix"  # a webhook delivery to MEDICAL that admins may list and replay
LEGAL = "p-peshawar-legal"  # a second Peshawar partner, for cases needing two services

ROLES = (
    "owner",
    "other_cw",
    "supervisor",
    "partner_holding",
    "partner_other",
    "auditor",
    "admin",
    "analyst",
    "anonymous",
    "revoked",
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # formatted with referral_id and assignment_id
    body: Callable[[], Any] | None = None
    # The case before the call: "offered" to the holding partner, "accepted" by it, or "withdrawn" by its caseworker.
    state: str = "offered"
    # A second referral of the same CNIC first, so a possible duplicate awaits a decision.
    duplicate: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "submit_referral": Endpoint(
        "POST", "/api/v1/referrals", lambda: referral_body(subject__cnic=None, subject__phone=None)
    ),
    "list_referrals": Endpoint("GET", "/api/v1/referrals"),
    "get_referral_offered": Endpoint("GET", "/api/v1/referrals/{referral_id}"),
    "get_referral_accepted": Endpoint("GET", "/api/v1/referrals/{referral_id}", state="accepted"),
    "inbox": Endpoint("GET", "/api/v1/assignments"),
    "accept": Endpoint("POST", "/api/v1/assignments/{assignment_id}/accept"),
    "decline": Endpoint("POST", "/api/v1/assignments/{assignment_id}/decline", lambda: {"reason": "no_capacity"}),
    "followup": Endpoint(
        "POST",
        "/api/v1/assignments/{assignment_id}/followups",
        lambda: {"outcome": "contacted", "note": "phoned, visit booked"},
        state="accepted",
    ),
    "close": Endpoint(
        "POST", "/api/v1/assignments/{assignment_id}/close", lambda: {"outcome": "services_delivered"}, state="accepted"
    ),
    "list_partners": Endpoint("GET", "/api/v1/partners"),
    "get_partner": Endpoint("GET", f"/api/v1/partners/{MEDICAL}"),
    "upsert_partner": Endpoint("POST", "/api/v1/partners", lambda: partner(id="p-new-org", name="New Organisation")),
    "overdue": Endpoint("GET", "/api/v1/deadlines/overdue"),
    "withdraw_consent": Endpoint("POST", "/api/v1/referrals/{referral_id}/consent/withdraw", lambda: {}),
    "withdraw_referral": Endpoint(
        "POST", "/api/v1/referrals/{referral_id}/withdraw", lambda: {"note": "family moved away"}
    ),
    "reopen_referral": Endpoint(
        "POST", "/api/v1/referrals/{referral_id}/reopen", lambda: {"note": "family is back"}, state="withdrawn"
    ),
    "audit_query": Endpoint("GET", "/api/v1/audit?referral_id={referral_id}&action=referral.submit"),
    "audit_verify": Endpoint("GET", "/api/v1/audit/verify"),
    "audit_checkpoint": Endpoint("GET", "/api/v1/audit/checkpoint"),
    "audit_inclusion": Endpoint("GET", "/api/v1/audit/proof/inclusion?index=0&size=2"),
    "audit_consistency": Endpoint("GET", "/api/v1/audit/proof/consistency?first=1&second=2"),
    "audit_export": Endpoint("GET", "/api/v1/audit/export.csv?referral_id={referral_id}"),
    "audit_referral_access": Endpoint("GET", "/api/v1/audit/referrals/{referral_id}/access"),
    "audit_subject_access": Endpoint("GET", "/api/v1/audit/subjects/{subject_id}/access"),
    "list_duplicates": Endpoint("GET", "/api/v1/duplicates", duplicate=True),
    "confirm_duplicate": Endpoint("POST", "/api/v1/duplicates/{duplicate_id}/confirm", duplicate=True),
    "dismiss_duplicate": Endpoint("POST", "/api/v1/duplicates/{duplicate_id}/dismiss", lambda: {}, duplicate=True),
    "list_deliveries": Endpoint("GET", f"/api/v1/partners/{MEDICAL}/deliveries"),
    "replay_delivery": Endpoint("POST", f"/api/v1/partners/{MEDICAL}/deliveries/{{delivery_id}}/replay"),
    "deadline_policy": Endpoint("GET", "/api/v1/deadlines/policy"),
    "report_sla": Endpoint("GET", "/api/v1/reports/sla"),
    "report_statistics": Endpoint("GET", "/api/v1/reports/statistics"),
}

# fmt: off
MATRIX: dict[str, tuple[int, ...]] = {
    #                        owner other_cw supervisor p_holding p_other auditor admin analyst anonymous revoked
    "submit_referral":       (201,  201,     201,       403,      403,    403,    403,  403,    401,      401),
    "list_referrals":        (200,  200,     200,       403,      403,    403,    403,  403,    401,      401),
    "get_referral_offered":  (200,  403,     200,       200,      403,    403,    403,  403,    401,      401),
    "get_referral_accepted": (200,  403,     200,       200,      403,    403,    403,  403,    401,      401),
    "inbox":                 (403,  403,     200,       200,      200,    403,    403,  403,    401,      401),
    "accept":                (403,  403,     403,       200,      403,    403,    403,  403,    401,      401),
    "decline":               (403,  403,     403,       200,      403,    403,    403,  403,    401,      401),
    "followup":              (403,  403,     403,       201,      403,    403,    403,  403,    401,      401),
    "close":                 (403,  403,     200,       200,      403,    403,    403,  403,    401,      401),
    "list_partners":         (200,  200,     200,       200,      200,    200,    200,  403,    401,      401),
    "get_partner":           (200,  200,     200,       200,      200,    200,    200,  403,    401,      401),
    "upsert_partner":        (403,  403,     403,       403,      403,    403,    201,  403,    401,      401),
    "overdue":               (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "withdraw_consent":      (200,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "withdraw_referral":     (200,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "reopen_referral":       (200,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "audit_query":           (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_verify":          (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_checkpoint":      (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_inclusion":       (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_consistency":     (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_export":          (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_referral_access": (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "audit_subject_access":  (403,  403,     403,       403,      403,    200,    403,  403,    401,      401),
    "list_duplicates":       (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "confirm_duplicate":     (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "dismiss_duplicate":     (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "list_deliveries":       (403,  403,     403,       403,      403,    403,    200,  403,    401,      401),
    "replay_delivery":       (403,  403,     403,       403,      403,    403,    200,  403,    401,      401),
    "deadline_policy":       (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "report_sla":            (403,  403,     200,       403,      403,    403,    403,  403,    401,      401),
    "report_statistics":     (403,  403,     200,       403,      403,    403,    403,  200,    401,      401),
}
# fmt: on

CELLS = [
    (endpoint, role, expected) for endpoint, row in MATRIX.items() for role, expected in zip(ROLES, row, strict=True)
]


def assert_json_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    return error


@dataclass
class World:
    client: Any
    services: Any
    headers: dict[str, dict[str, str]]
    user_ids: dict[str, str]
    referral_id: str
    assignment_id: str
    subject_id: str
    duplicate_id: str | None = None

    def call(self, method: str, path: str, role: str, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {"headers": self.headers[role]}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(self.url(path), method=method, **kwargs)

    def url(self, path: str) -> str:
        """The documented path with this world's ids in its placeholders."""
        return path.format(
            referral_id=self.referral_id,
            assignment_id=self.assignment_id,
            subject_id=self.subject_id,
            duplicate_id=self.duplicate_id,
            delivery_id=DELIVERY,
        )

    @property
    def roles(self) -> dict[str, str]:
        return {"owner": "caseworker", "other_cw": "caseworker", "revoked": "supervisor"} | {
            r: r for r in ("supervisor", "auditor", "admin", "analyst")
        }

    def denials(self, role: str) -> list[dict[str, Any]]:
        """The refusals on record for the role's user: (entry id, action, role)."""
        user_id = self.user_ids.get(role)
        if user_id is None:
            return []
        with self.services.uow() as uow:
            rows = self.services.audit.query(uow.session, AuditFilter(actor_id=user_id), limit=200)
            opened = [self.services.audit.open_entry(uow.session, row) for row in rows]
        return [
            {"id": e.id, "action": e.record["action"], "role": e.record["role"]}
            for e in opened
            if e.record is not None and e.record["outcome"] == "denied"
        ]

    def snapshot(self) -> tuple[Any, ...]:
        with self.services.uow() as uow:
            s = uow.session
            return (
                s.scalar(select(func.count()).select_from(Referral)),
                tuple(
                    s.execute(
                        select(Referral.id, Referral.status, Referral.consent_withdrawn_at).order_by(Referral.id)
                    ).all()
                ),
                tuple(s.execute(select(Assignment.id, Assignment.status).order_by(Assignment.id)).all()),
                tuple(s.execute(select(Partner.id, Partner.name, Partner.capacity).order_by(Partner.id)).all()),
                tuple(
                    s.execute(
                        select(PossibleDuplicate.id, PossibleDuplicate.status).order_by(PossibleDuplicate.id)
                    ).all()
                ),
                tuple(s.execute(select(Subject.id, Subject.person_id).order_by(Subject.id)).all()),
                tuple(s.execute(select(Notification.id, Notification.status, Notification.retry_since)).all()),
            )


def build_world(
    services: Any, client: Any, make_user: Any, add_partner: Any, *, state: str, duplicate: bool = False
) -> World:
    add_partner()
    add_partner(
        id=QUETTA,
        name="Quetta Legal Aid",
        services=["legal_aid"],
        provinces=["Balochistan"],
        districts=["Quetta"],
        languages=["ur"],
    )
    handles = {
        "owner": make_user("caseworker"),
        "other_cw": make_user("caseworker"),
        "supervisor": make_user("supervisor"),
        "partner_holding": make_user("partner", partner_id=MEDICAL),
        "partner_other": make_user("partner", partner_id=QUETTA),
        "auditor": make_user("auditor"),
        "admin": make_user("admin"),
        "analyst": make_user("analyst"),
        "revoked": make_user("supervisor"),
    }
    assert users.revoke_tokens(services, handles["revoked"].actor.user_id) == 1
    headers = {role: h.headers for role, h in handles.items()}
    headers["anonymous"] = {}
    resp = client.post("/api/v1/referrals", json=referral_body(), headers=headers["owner"])
    assert resp.status_code == 201, resp.get_json()
    referral_id, subject_id = resp.get_json()["id"], resp.get_json()["subject_id"]
    drain(services)
    with services.uow() as uow:  # a delivery to the holding partner, already made, for admins to see
        now = services.clock.now()
        uow.session.add(
            Notification(
                id=DELIVERY,
                partner_id=MEDICAL,
                channel="webhook",
                event_id="e-1",
                event_type="assignment.offered",
                payload={},
                status="delivered",
                attempts=1,
                retry_since=now,
                created_at=now,
                delivered_at=now,
            )
        )
        uow.commit()
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=headers["owner"]).get_json()
    [assignment] = shown["assignments"]
    assert (assignment["partner_id"], assignment["status"]) == (MEDICAL, "offered")
    if state == "accepted":
        resp = client.post(f"/api/v1/assignments/{assignment['id']}/accept", headers=headers["partner_holding"])
        assert resp.status_code == 200, resp.get_json()
    elif state == "withdrawn":
        resp = client.post(f"/api/v1/referrals/{referral_id}/withdraw", json={}, headers=headers["owner"])
        assert resp.status_code == 200, resp.get_json()
    else:
        assert state == "offered", state
    duplicate_id = None
    if duplicate:  # the same CNIC again, without consent so nothing more is routed
        resp = client.post(
            "/api/v1/referrals",
            json=referral_body(subject__full_name="Z. Khattak", consent={"given": False}),
            headers=headers["owner"],
        )
        assert resp.status_code == 201, resp.get_json()
        [pending] = client.get("/api/v1/duplicates", headers=headers["supervisor"]).get_json()["items"]
        duplicate_id = pending["id"]
    integrate_all(services)  # the audit entries so far are sequenced and signed: proofs have a tree
    return World(
        client,
        services,
        headers,
        {r: h.actor.user_id for r, h in handles.items()},
        referral_id,
        assignment["id"],
        subject_id,
        duplicate_id,
    )


@pytest.fixture
def world_factory(services: Any, client: Any, make_user: Any, add_partner: Any) -> Callable[..., World]:
    return lambda state="offered", duplicate=False: build_world(
        services, client, make_user, add_partner, state=state, duplicate=duplicate
    )


def _check_success(endpoint: str, role: str, world: World, body: dict[str, Any]) -> None:
    """Allowed calls do what they say, and lists are scoped to the caller."""
    if endpoint == "submit_referral":
        assert body["reference"].startswith("VAN-") and body["status"] == "submitted"
    elif endpoint == "list_referrals":
        ids = [item["id"] for item in body["items"]]
        assert ids == ([] if role == "other_cw" else [world.referral_id])
    elif endpoint.startswith("get_referral"):
        assert body["id"] == world.referral_id
        assert [a["id"] for a in body["assignments"]] == [world.assignment_id]
    elif endpoint == "inbox":
        ids = [item["id"] for item in body["items"]]
        assert ids == ([] if role == "partner_other" else [world.assignment_id])
    elif endpoint == "accept":
        assert body["status"] == "accepted"
    elif endpoint == "decline":
        assert body["status"] == "declined" and body["decline_reason"] == "no_capacity"
    elif endpoint == "followup":
        assert body["assignment_id"] == world.assignment_id and body["outcome"] == "contacted"
    elif endpoint == "close":
        assert body["status"] == "closed" and body["close_outcome"] == "services_delivered"
    elif endpoint == "list_partners":
        assert {p["id"] for p in body["items"]} == {MEDICAL, QUETTA} and body["next"] is None
    elif endpoint == "get_partner":
        assert body["id"] == MEDICAL
    elif endpoint == "upsert_partner":
        assert body["id"] == "p-new-org"
    elif endpoint == "overdue":
        assert body["items"] == []
    elif endpoint in ("withdraw_consent", "withdraw_referral"):
        assert body["status"] == "withdrawn"
    elif endpoint == "reopen_referral":
        assert body["status"] == "submitted"
    elif endpoint == "audit_query":
        [submitted] = body["items"]
        assert (submitted["actor_id"], submitted["role"], submitted["outcome"]) == (
            world.user_ids["owner"],
            "caseworker",
            "allowed",
        )
        assert submitted["referral_id"] == world.referral_id and body["next"] is None
    elif endpoint == "audit_verify":
        assert body["ok"] is True and body["entries"] == body["size"] >= 2 and isinstance(body["head"], str)
    elif endpoint == "audit_checkpoint":
        origin, size, _root = body.partition("\n\n")[0].split("\n")
        assert origin == world.services.audit.origin and int(size) >= 2
    elif endpoint == "audit_inclusion":
        assert (body["index"], body["size"]) == (0, 2) and len(body["hashes"]) == 1
    elif endpoint == "audit_consistency":
        assert (body["first"], body["second"]) == (1, 2) and len(body["hashes"]) == 1
    elif endpoint == "audit_export":
        header, *rows = body.splitlines()
        assert header.startswith("index,id,at,actor_id,role,") and rows
        assert all(world.referral_id in row for row in rows)
    elif endpoint == "audit_referral_access":
        assert body["referral_id"] == world.referral_id
        assert world.user_ids["owner"] in {item["actor_id"] for item in body["items"]}
    elif endpoint == "audit_subject_access":
        assert body["subject_id"] == world.subject_id
        assert world.user_ids["owner"] in {item["actor_id"] for item in body["items"]}
    elif endpoint == "list_duplicates":
        assert [d["id"] for d in body["items"]] == [world.duplicate_id] and body["next"] is None
        assert body["items"][0]["earlier_referral"]["id"] == world.referral_id
    elif endpoint in ("confirm_duplicate", "dismiss_duplicate"):
        assert body["id"] == world.duplicate_id
        assert body["status"] == ("confirmed" if endpoint == "confirm_duplicate" else "dismissed")
    elif endpoint == "list_deliveries":
        assert [(d["id"], d["status"]) for d in body["items"]] == [(DELIVERY, "delivered")]
    elif endpoint == "replay_delivery":
        assert (body["id"], body["status"]) == (DELIVERY, "pending")
    elif endpoint == "deadline_policy":
        assert set(body["levels"]) == {"critical", "high", "medium", "low"}
    elif endpoint == "report_sla":
        assert [(r["partner_id"], r["offered"], r["open"]) for r in body["rows"]] == [(MEDICAL, 1, 1)]
    elif endpoint == "report_statistics":
        assert body["by"] == ["risk_level"] and body["total"] is None  # one referral: under the threshold
    else:  # pragma: no cover - a new matrix row needs its own check
        raise AssertionError(endpoint)


@pytest.mark.parametrize(("endpoint", "role", "expected"), CELLS, ids=[f"{e}-{r}" for e, r, _ in CELLS])
def test_role_endpoint_matrix(
    app: Any, world_factory: Callable[..., World], endpoint: str, role: str, expected: int
) -> None:
    spec = ENDPOINTS[endpoint]
    assert _route_exists(app, spec), f"{spec.method} {spec.path} is in the contract but has no route"
    world = world_factory(state=spec.state, duplicate=spec.duplicate)
    before = world.snapshot()
    denials_before = world.denials(role)
    resp = world.call(spec.method, spec.path, role, spec.body() if spec.body else None)
    if expected == 401:
        assert_json_error(resp, 401, "unauthenticated")
    elif expected == 403:
        assert_json_error(resp, 403, "forbidden")
        # Each refusal is on record, once, under the refused user.
        new = [d for d in world.denials(role) if d not in denials_before]
        assert len(new) == 1, new
        assert new[0]["role"] == ("partner" if role.startswith("partner") else world.roles[role])
    else:
        assert resp.status_code == expected, resp.get_data(as_text=True)
        _check_success(endpoint, role, world, resp.get_json() if resp.is_json else resp.get_data(as_text=True))
        return
    assert world.snapshot() == before, "a refused call changed state"


# -- role before body and parameters ----------------------------------------------------------------
# A user's role, for telling a refusal of the role (no case could allow it) from one of the case.
KIND = {"owner": "caseworker", "other_cw": "caseworker", "partner_holding": "partner", "partner_other": "partner"}
# Every query parameter an endpoint reads, each with a value that fails its check.
BAD_QUERY = (
    "limit=many&cursor=%25%25&status=no-such-status&from=someday&to=someday&by=no_such_dimension"
    "&index=first&size=all&first=one&second=two&since=never&until=never&actor_id=&action="
)
# A body that does not parse, one that is not an object, and an object that fails every schema.
BAD_BODIES = (
    ('{"reason": ', "malformed"),
    ("[1, 2]", "not an object"),
    ('{"reason": "no_such_reason", "outcome": 7, "note": ["x"], "subject": 1, "id": 2, "no_such_field": 3}', "invalid"),
)


def _refused_by_role(endpoint: str) -> list[str]:
    """The users whose role the matrix refuses on this endpoint for every user of that role."""
    row = {r: s for r, s in zip(ROLES, MATRIX[endpoint], strict=True) if r not in ("anonymous", "revoked")}
    by_kind: dict[str, set[int]] = {}
    for role, status in row.items():
        by_kind.setdefault(KIND.get(role, role), set()).add(status)
    return [role for role in row if by_kind[KIND.get(role, role)] == {403}]


def _with_bad_query(path: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{BAD_QUERY}"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_role_that_may_not_call_an_endpoint_gets_403_whatever_body_or_parameters_it_sends(
    world_factory: Callable[..., World], endpoint: str
) -> None:
    # A 400 or 422 for a bad body would tell a caller who may not use the endpoint what it takes.
    spec = ENDPOINTS[endpoint]
    refused = _refused_by_role(endpoint)
    world = world_factory(state=spec.state, duplicate=spec.duplicate)
    before = world.snapshot()
    sends: list[tuple[str, str | None]] = [(_with_bad_query(spec.path), None)]
    if spec.method == "POST":
        sends += [(spec.path, body) for body, _ in BAD_BODIES]
    for role in refused:
        for path, raw in sends:
            denials_before = world.denials(role)
            resp = world.client.open(
                world.url(path),
                method=spec.method,
                headers=world.headers[role],
                data=raw,
                content_type="application/json" if raw is not None else None,
            )
            assert resp.status_code == 403, (role, path, raw, resp.get_data(as_text=True))
            assert_json_error(resp, 403, "forbidden")
            assert len([d for d in world.denials(role) if d not in denials_before]) == 1, (role, path, raw)
    assert world.snapshot() == before, "a refused call changed state"


def _rule(spec: Endpoint) -> tuple[str, str]:
    return spec.method, (
        spec.path.partition("?")[0]
        .replace("{referral_id}", "<referral_id>")
        .replace("{subject_id}", "<subject_id>")
        .replace("{assignment_id}", "<assignment_id>")
        .replace("{duplicate_id}", "<duplicate_id>")
        .replace("{delivery_id}", "<delivery_id>")
        .replace(MEDICAL, "<partner_id>")
    )


def _api_routes(app: Any) -> set[tuple[str, str]]:
    return {
        (m, r.rule)
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/v1/")
        for m in r.methods - {"HEAD", "OPTIONS"}
    }


def _route_exists(app: Any, spec: Endpoint) -> bool:
    return _rule(spec) in _api_routes(app)


def test_matrix_covers_every_api_route(app: Any) -> None:
    # A new /api/v1 route must get a matrix row (the OpenAPI document is public, so it is exempt).
    covered = {_rule(e) for e in ENDPOINTS.values()}
    routes = _api_routes(app) - {("GET", "/api/v1/openapi.json")}
    assert routes <= covered, f"routes without a matrix row: {sorted(routes - covered)}"


def test_the_openapi_document_needs_no_token(client: Any) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200 and resp.get_json()["openapi"].startswith("3.")


def test_unknown_ids_are_404_for_allowed_roles(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    assert_json_error(world.call("GET", "/api/v1/referrals/no-such-id", "supervisor"), 404, "not_found")
    assert_json_error(world.call("POST", "/api/v1/assignments/no-such-id/accept", "partner_holding"), 404, "not_found")
    assert_json_error(
        world.call("POST", "/api/v1/referrals/no-such-id/consent/withdraw", "supervisor", {}), 404, "not_found"
    )
    assert_json_error(world.call("GET", "/api/v1/partners/no-such-partner", "auditor"), 404, "not_found")
    for verb in ("confirm", "dismiss"):
        assert_json_error(world.call("POST", f"/api/v1/duplicates/no-such-id/{verb}", "supervisor"), 404, "not_found")


def test_malformed_authorization_headers_are_401(client: Any, services: Any) -> None:
    for header in ("", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer rs_not-a-real-token"):
        resp = client.get("/api/v1/referrals", headers={"Authorization": header} if header else {})
        assert_json_error(resp, 401, "unauthenticated")


# -- what a partner sees --------------------------------------------------------------------------
def _submit_and_route(world_client: Any, services: Any, headers: dict[str, str], **overrides: Any) -> str:
    resp = world_client.post("/api/v1/referrals", json=referral_body(**overrides), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    drain(services)
    return str(resp.get_json()["id"])


def _only_assignment_id(client: Any, referral_id: str, headers: dict[str, str]) -> str:
    shown = client.get(f"/api/v1/referrals/{referral_id}", headers=headers).get_json()
    [a] = shown["assignments"]
    return str(a["id"])


def test_partner_with_contact_consent_sees_contact_fields_only(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = _submit_and_route(client, services, cw.headers, consent__share=["contact"])
    resp = client.get(f"/api/v1/referrals/{rid}", headers=staff.headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    subject = body["subject"]
    assert subject["full_name"] == "Zarmeena Khattak"
    assert subject["phone"] == "+923001234567"
    assert subject["address"] == "House 12, Street 4, Hayatabad Phase 3"
    assert subject.get("cnic") is None and subject.get("date_of_birth") is None
    assert body.get("incident") is None
    # What every holder needs to serve the case.
    assert subject["district"] == "Peshawar" and subject["province"] == "Khyber Pakhtunkhwa"
    assert subject["preferred_language"] == "ps" and subject["is_minor"] is False
    assert subject["sex"] == "female"
    assert body["needs"] == ["medical"] and body["risk_level"] == "high"
    assert body["preferences"] == {"staff_sex": "any"}
    # Caseworker-only material stays with the caseworker.
    for key in ("consent", "caseworker_id", "routing_decisions"):
        assert key not in body
    assert "17301" not in resp.get_data(as_text=True) and "Qissa Khwani" not in resp.get_data(as_text=True)


def test_partner_with_identity_and_incident_consent_sees_those_only(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = _submit_and_route(client, services, cw.headers, consent__share=["identity", "incident"])
    resp = client.get(f"/api/v1/referrals/{rid}", headers=staff.headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    subject = body["subject"]
    assert subject["cnic"] == "17301-1234567-2" and subject["date_of_birth"] == "1990-04-12"
    for name in ("full_name", "phone", "address"):
        assert subject.get(name) is None, name
    assert body["incident"]["narrative"] == "Injured at the Qissa Khwani bazaar blast"
    assert body["incident"]["date"] == "2026-09-30" and body["incident"]["type"] == "bombing"
    text = resp.get_data(as_text=True)
    assert "Zarmeena" not in text and "Hayatabad" not in text and "3001234567" not in text


def test_partner_with_no_shared_scopes_sees_only_service_fields(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = _submit_and_route(client, services, cw.headers, consent__share=[])
    body = client.get(f"/api/v1/referrals/{rid}", headers=staff.headers).get_json()
    for name in ("full_name", "phone", "address", "cnic", "date_of_birth"):
        assert body["subject"].get(name) is None, name
    assert body.get("incident") is None
    assert body["subject"]["district"] == "Peshawar"


def test_partner_loses_access_after_declining(services: Any, client: Any, make_user: Any, add_partner: Any) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = _submit_and_route(client, services, cw.headers)
    aid = _only_assignment_id(client, rid, cw.headers)
    assert client.get(f"/api/v1/referrals/{rid}", headers=staff.headers).status_code == 200
    resp = client.post(f"/api/v1/assignments/{aid}/decline", json={"reason": "no_capacity"}, headers=staff.headers)
    assert resp.status_code == 200, resp.get_json()
    drain(services)
    assert_json_error(client.get(f"/api/v1/referrals/{rid}", headers=staff.headers), 403, "forbidden")
    # Nor can it act on the case any more.
    assert client.post(f"/api/v1/assignments/{aid}/accept", headers=staff.headers).status_code == 409


def test_partner_loses_access_after_consent_withdrawal(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    cw, staff = make_user("caseworker"), make_user("partner", partner_id=MEDICAL)
    rid = _submit_and_route(client, services, cw.headers)
    aid = _only_assignment_id(client, rid, cw.headers)
    assert client.post(f"/api/v1/assignments/{aid}/accept", headers=staff.headers).status_code == 200
    assert client.post(f"/api/v1/referrals/{rid}/consent/withdraw", json={}, headers=cw.headers).status_code == 200
    assert_json_error(client.get(f"/api/v1/referrals/{rid}", headers=staff.headers), 403, "forbidden")
    resp = client.post(f"/api/v1/assignments/{aid}/followups", json={"outcome": "contacted"}, headers=staff.headers)
    assert resp.status_code == 409, resp.get_json()
    inbox = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
    assert [(a["id"], a["status"]) for a in inbox] == [(aid, "withdrawn")]


def test_partner_never_sees_another_partners_assignment(
    services: Any, client: Any, make_user: Any, add_partner: Any
) -> None:
    add_partner()
    add_partner(id=LEGAL, name="Peshawar Legal Aid", services=["legal_aid"])
    cw = make_user("caseworker")
    medical, legal = make_user("partner", partner_id=MEDICAL), make_user("partner", partner_id=LEGAL)
    rid = _submit_and_route(client, services, cw.headers, needs=["medical", "legal_aid"])
    full = client.get(f"/api/v1/referrals/{rid}", headers=cw.headers).get_json()
    by_partner = {a["partner_id"]: a["id"] for a in full["assignments"]}
    assert set(by_partner) == {MEDICAL, LEGAL}

    for staff, mine, theirs in ((medical, MEDICAL, LEGAL), (legal, LEGAL, MEDICAL)):
        shown = client.get(f"/api/v1/referrals/{rid}", headers=staff.headers).get_json()
        assert [a["partner_id"] for a in shown["assignments"]] == [mine]
        inbox = client.get("/api/v1/assignments", headers=staff.headers).get_json()["items"]
        assert [a["id"] for a in inbox] == [by_partner[mine]]
        filtered = client.get("/api/v1/assignments?status=offered", headers=staff.headers).get_json()["items"]
        assert [a["partner_id"] for a in filtered] == [mine]
        for action, body in (
            ("accept", None),
            ("decline", {"reason": "no_capacity"}),
            ("followups", {"outcome": "contacted"}),
            ("close", {"outcome": "other", "note": "x"}),
        ):
            resp = client.post(f"/api/v1/assignments/{by_partner[theirs]}/{action}", json=body, headers=staff.headers)
            assert_json_error(resp, 403, "forbidden")


# -- after the case moved on: decline, withdrawal, close, consent withdrawal, erasure --------------------
def _move(world: World, state: str) -> None:
    """Take the world's case (offered to the holding partner) to `state`."""
    c, aid, rid = world.client, world.assignment_id, world.referral_id

    def ok(resp: Any) -> None:
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)

    if state == "declined":
        ok(world.call("POST", f"/api/v1/assignments/{aid}/decline", "partner_holding", {"reason": "no_capacity"}))
        drain(world.services)
    elif state == "referral_withdrawn":
        ok(world.call("POST", f"/api/v1/referrals/{rid}/withdraw", "owner", {"note": "moved"}))
    elif state == "closed":
        ok(world.call("POST", f"/api/v1/assignments/{aid}/accept", "partner_holding"))
        ok(world.call("POST", f"/api/v1/assignments/{aid}/close", "partner_holding", {"outcome": "services_delivered"}))
    elif state == "consent_withdrawn":
        ok(world.call("POST", f"/api/v1/assignments/{aid}/accept", "partner_holding"))
        ok(world.call("POST", f"/api/v1/referrals/{rid}/consent/withdraw", "owner", {}))
    elif state == "erased":
        ok(world.call("POST", f"/api/v1/assignments/{aid}/accept", "partner_holding"))
        erase_subject(world.services, world.subject_id)
    else:  # pragma: no cover
        raise AssertionError(state)
    del c


AFTER_STATES = ("declined", "referral_withdrawn", "closed", "consent_withdrawn", "erased")
AFTER_ENDPOINTS: dict[str, Endpoint] = {
    "get_referral": ENDPOINTS["get_referral_offered"],
    "accept": ENDPOINTS["accept"],
    "followup": Endpoint(
        "POST", "/api/v1/assignments/{assignment_id}/followups", lambda: {"outcome": "contacted", "note": "called"}
    ),
    "close": ENDPOINTS["close"],
    "audit_referral_access": ENDPOINTS["audit_referral_access"],
}
# What each role gets once the case is in that state: the holding partner loses the file with its offer
# or its consent, and its actions are refused as conflicts (it is known to be its assignment); nobody
# else gains anything; the owner and supervisors keep the file; the auditor keeps the record.
# fmt: off
AFTER: dict[tuple[str, str], tuple[int, int, int, int, int, int]] = {
    #                                         owner supervisor p_holding p_other auditor analyst
    ("declined", "get_referral"):            (200,  200,       403,      403,    403,    403),
    ("declined", "accept"):                  (403,  403,       409,      403,    403,    403),
    ("declined", "followup"):                (403,  403,       409,      403,    403,    403),
    ("declined", "close"):                   (403,  409,       409,      403,    403,    403),
    ("declined", "audit_referral_access"):   (403,  403,       403,      403,    200,    403),
    ("referral_withdrawn", "get_referral"):  (200,  200,       403,      403,    403,    403),
    ("referral_withdrawn", "accept"):        (403,  403,       409,      403,    403,    403),
    ("referral_withdrawn", "followup"):      (403,  403,       409,      403,    403,    403),
    ("referral_withdrawn", "close"):         (403,  409,       409,      403,    403,    403),
    ("referral_withdrawn", "audit_referral_access"): (403, 403, 403,     403,    200,    403),
    ("closed", "get_referral"):              (200,  200,       403,      403,    403,    403),
    ("closed", "accept"):                    (403,  403,       409,      403,    403,    403),
    ("closed", "followup"):                  (403,  403,       409,      403,    403,    403),
    ("closed", "close"):                     (403,  409,       409,      403,    403,    403),
    ("closed", "audit_referral_access"):     (403,  403,       403,      403,    200,    403),
    ("consent_withdrawn", "get_referral"):   (200,  200,       403,      403,    403,    403),
    ("consent_withdrawn", "accept"):         (403,  403,       409,      403,    403,    403),
    ("consent_withdrawn", "followup"):       (403,  403,       409,      403,    403,    403),
    ("consent_withdrawn", "close"):          (403,  409,       409,      403,    403,    403),
    ("consent_withdrawn", "audit_referral_access"): (403, 403, 403,      403,    200,    403),
    ("erased", "get_referral"):              (200,  200,       200,      403,    403,    403),
    ("erased", "accept"):                    (403,  403,       409,      403,    403,    403),
    ("erased", "followup"):                  (403,  403,       409,      403,    403,    403),
    ("erased", "close"):                     (403,  200,       200,      403,    403,    403),
    ("erased", "audit_referral_access"):     (403,  403,       403,      403,    200,    403),
}
# fmt: on
AFTER_ROLES = ("owner", "supervisor", "partner_holding", "partner_other", "auditor", "analyst")
AFTER_CELLS = [
    (state, endpoint, role, expected)
    for (state, endpoint), row in AFTER.items()
    for role, expected in zip(AFTER_ROLES, row, strict=True)
]


@pytest.mark.parametrize(
    ("state", "endpoint", "role", "expected"), AFTER_CELLS, ids=[f"{s}-{e}-{r}" for s, e, r, _ in AFTER_CELLS]
)
def test_after_the_case_moved_on_each_role_gets_what_the_state_allows(
    world_factory: Callable[..., World], state: str, endpoint: str, role: str, expected: int
) -> None:
    world = world_factory()
    _move(world, state)
    spec = AFTER_ENDPOINTS[endpoint]
    before = world.snapshot()
    denials_before = world.denials(role)
    resp = world.call(spec.method, spec.path, role, spec.body() if spec.body else None)
    assert resp.status_code == expected, resp.get_data(as_text=True)
    if expected >= 400:
        assert resp.is_json and set(resp.get_json()) == {"error"}
        assert world.snapshot() == before, "a refused call changed state"
    if expected == 403:
        assert len([d for d in world.denials(role) if d not in denials_before]) == 1, "the refusal is on record"
    # A note cannot be sealed for an erased person: a clear conflict, not a 500.
    if (
        state == "erased" and endpoint == "followup" and expected == 409
    ):  # its note cannot be sealed: a clear conflict, not a 500
        assert resp.get_json()["error"]["code"] == "subject_erased"
    if state == "erased" and endpoint == "get_referral" and expected == 200:
        subject = resp.get_json()["subject"]
        assert subject.get("full_name") is None and subject.get("erased") in (True, None)
        assert "Zarmeena" not in resp.get_data(as_text=True)


# -- objects that do not exist --------------------------------------------------------------------------
CW, SUP, PH, PO, AUD, ADM, ANA = (
    "owner",
    "supervisor",
    "partner_holding",
    "partner_other",
    "auditor",
    "admin",
    "analyst",
)
ASKING = (CW, SUP, PH, PO, AUD, ADM, ANA)
# A role that may do the action on some object learns that this one does not exist (404); a role that may
# do it on none is refused before the lookup (403), so its answer says nothing about existence.
MISSING: dict[str, tuple[str, str, Any, frozenset[str], int]] = {
    "get_referral": ("GET", "/api/v1/referrals/no-such-id", None, frozenset({CW, SUP, PH, PO}), 404),
    "withdraw_consent": ("POST", "/api/v1/referrals/no-such-id/consent/withdraw", {}, frozenset({CW, SUP}), 404),
    "withdraw_referral": ("POST", "/api/v1/referrals/no-such-id/withdraw", {}, frozenset({CW, SUP}), 404),
    "reopen_referral": ("POST", "/api/v1/referrals/no-such-id/reopen", {"note": "x"}, frozenset({CW, SUP}), 404),
    "accept": ("POST", "/api/v1/assignments/no-such-id/accept", None, frozenset({PH, PO}), 404),
    "decline": ("POST", "/api/v1/assignments/no-such-id/decline", {"reason": "no_capacity"}, frozenset({PH, PO}), 404),
    "followup": (
        "POST",
        "/api/v1/assignments/no-such-id/followups",
        {"outcome": "contacted"},
        frozenset({PH, PO}),
        404,
    ),
    "close": (
        "POST",
        "/api/v1/assignments/no-such-id/close",
        {"outcome": "other", "note": "x"},
        frozenset({SUP, PH, PO}),
        404,
    ),
    "get_partner": ("GET", "/api/v1/partners/no-such-partner", None, frozenset(set(ASKING) - {ANA}), 404),
    "confirm_duplicate": ("POST", "/api/v1/duplicates/no-such-id/confirm", None, frozenset({SUP}), 404),
    "dismiss_duplicate": ("POST", "/api/v1/duplicates/no-such-id/dismiss", {}, frozenset({SUP}), 404),
    "list_deliveries": ("GET", "/api/v1/partners/no-such-partner/deliveries", None, frozenset({ADM}), 404),
    "replay_delivery": (
        "POST",
        f"/api/v1/partners/{MEDICAL}/deliveries/no-such-id/replay",
        None,
        frozenset({ADM}),
        404,
    ),
    # An auditor may ask about any id: a report with nothing in it.
    "audit_referral_access": ("GET", "/api/v1/audit/referrals/no-such-id/access", None, frozenset({AUD}), 200),
    "audit_subject_access": ("GET", "/api/v1/audit/subjects/no-such-id/access", None, frozenset({AUD}), 200),
}


@pytest.mark.parametrize("endpoint", sorted(MISSING))
def test_an_object_that_does_not_exist_is_404_to_a_role_that_may_ask_and_403_to_one_that_may_not(
    world_factory: Callable[..., World], endpoint: str
) -> None:
    method, path, body, may, status = MISSING[endpoint]
    world = world_factory()
    for role in ASKING:
        resp = world.call(method, path, role, body)
        if role not in may:
            assert_json_error(resp, 403, "forbidden")
        elif status == 404:
            assert_json_error(resp, 404, "not_found")
        else:  # the report about the id holds only the asking itself, the refusals included
            assert resp.status_code == status, resp.get_data(as_text=True)
            items = resp.get_json()["items"]
            assert items and {i["action"] for i in items} == {"audit.read"}
