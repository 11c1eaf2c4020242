"""Fuzzing the API from its own OpenAPI document (schemathesis), with a bearer token for every role.

Schemathesis reads `/api/v1/openapi.json` from the app (in-process over WSGI, the embedded profile) and,
for every documented operation, sends requests built from the document: its coverage phase (boundary
and invalid values of each parameter and body field) and its fuzzing phase (random valid and invalid
data). Every answer must be no server error, have a documented status code and content type, and a
body and headers that match the schema the document gives for that status.

The database holds a small world first (partners, referrals offered, accepted, followed up and
withdrawn, a possible duplicate, a parked webhook delivery, an integrated audit log), and path ids are
drawn half the time from the ids that exist, so the fuzz reaches past "404 no such referral" into the
views' own checks. Each operation and role is its own test (`test_fuzz[GET /api/v1/referrals][analyst]`).
The document is read at import (schemathesis makes the tests at collection; `schemathesis.pytest.from_fixture`
does not work with pytest 9, which has no `Node._nodeid`), the app it fuzzes is the module's `world`.

Bounded: `REFERRAL_FUZZ_EXAMPLES` (default below) caps the fuzzing phase per operation and role;
`derandomize` keeps CI's run reproducible (the same cases every run). `REFERRAL_FUZZ_SEED=random` draws
new ones, for a longer hunt by hand (README, "Fuzzing the API").
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask, Response
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from referral_service.app import create_app
from referral_service.bootstrap import Services, bootstrap
from referral_service.crypto.keyring import create_keyring
from referral_service.db.models import Notification
from referral_service.domain.model import Role
from referral_service.services import partners, users
from referral_service.services.audit import integrate_all
from schemas import PartnerSchema
from tests.conftest import FakeClock, embedded_settings
from tests.factories import partner, referral_body
from tests.pipeline import drain

ROLES = tuple(role.value for role in Role)
MEDICAL, LEGAL, QUETTA = "p-peshawar-medical", "p-peshawar-legal", "p-quetta-legal"
DELIVERY = "msg_fuzz"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"  # kept by CI as artefacts, never committed
EXAMPLES = int(os.environ.get("REFERRAL_FUZZ_EXAMPLES", "15"))
RANDOM_SEED = os.environ.get("REFERRAL_FUZZ_SEED") == "random"
# Every answer: no 5xx; a documented status, content type, body and headers.
# Invalid input (by the document) refused with a 4xx; a required header left out refused; a method the
# document does not name answered 405 with an `Allow` that lists exactly the documented ones.
# Left out (BENCHMARKS.md, "Fuzzing"): positive_data_acceptance (the document cannot say every rule the
# views keep: a cursor this API issued, a note for "other", `until` after `since`, a district of the
# official list; those answer 422, as documented), ignored_auth (the access matrix's job; its probes
# also need the schema loaded from a URL), the stateful checks (no links in the document) and
# max_response_time (this machine's load, not the service, would decide it).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
]


@dataclass(repr=False)
class World:
    app: Flask
    services: Services
    tokens: dict[str, str]
    # Real ids by path-parameter name: what a fuzzed path may name instead of a random string.
    ids: dict[str, list[str]] = field(default_factory=dict)
    # (operation, role, status) -> requests sent: written to test-output/fuzz-summary.json for BENCHMARKS.md.
    tally: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        # Hypothesis prints the test's arguments with a failing case: the tally would make it huge.
        return f"World({sum(self.tally.values())} requests so far)"

    def summary(self) -> dict[str, Any]:
        operations: dict[str, dict[str, Any]] = {}
        for (op, role, status), n in sorted(self.tally.items()):
            entry = operations.setdefault(op, {"requests": 0, "by_role": {}, "by_status": {}})
            entry["requests"] += n
            entry["by_role"][role] = entry["by_role"].get(role, 0) + n
            entry["by_status"][str(status)] = entry["by_status"].get(str(status), 0) + n
        return {
            "examples_setting": EXAMPLES,
            "seed": "random" if RANDOM_SEED else "derandomized",
            "seconds": round(time.monotonic() - self.started, 1),
            "requests": sum(self.tally.values()),
            "operations": operations,
        }


def _seed(services: Services, app: Flask, clock: FakeClock) -> World:
    partners.upsert_partners(
        services,
        [
            PartnerSchema().load(partner(capacity=50)),
            PartnerSchema().load(partner(id=LEGAL, name="Peshawar Legal Aid", services=["legal_aid"], capacity=50)),
            PartnerSchema().load(
                partner(
                    id=QUETTA,
                    name="Quetta Legal Aid",
                    services=["legal_aid"],
                    provinces=["Balochistan"],
                    districts=["Quetta"],
                )
            ),
        ],
    )
    tokens: dict[str, str] = {}
    for role in ROLES:
        made = users.create_user(
            services, name=f"fuzz-{role}", role=role, partner_id=MEDICAL if role == Role.PARTNER else None
        )
        tokens[role] = made["token"]
    client = app.test_client()

    def call(method: str, path: str, role: str, status: int, **kwargs: Any) -> Any:
        resp = client.open(path, method=method, headers={"Authorization": f"Bearer {tokens[role]}"}, **kwargs)
        assert resp.status_code == status, (method, path, resp.get_data(as_text=True)[:300])
        return resp.get_json()

    share = {"given": True, "method": "written", "share": ["contact", "identity", "incident"]}
    bodies = [
        referral_body(consent=share),
        referral_body(subject__phone=None),  # the same CNIC: a possible duplicate of the first
        referral_body(needs=["medical", "legal_aid"], risk_level="critical", subject__cnic="17301-7654321-1"),
        referral_body(subject__cnic=None, subject__phone="+923339876543", subject__date_of_birth=None),
        referral_body(consent={"given": False}, subject__cnic="17301-1111111-1", subject__phone=None),
    ]
    referrals = [call("POST", "/api/v1/referrals", "caseworker", 201, json=body) for body in bodies]
    drain(services)
    offers = call("GET", "/api/v1/assignments?limit=100", "partner", 200)["items"]
    by_referral = {a["referral_id"]: a["id"] for a in offers}
    accepted = by_referral[referrals[0]["id"]]
    call("POST", f"/api/v1/assignments/{accepted}/accept", "partner", 200)
    call("POST", f"/api/v1/assignments/{accepted}/followups", "partner", 201, json={"outcome": "contacted"})
    call("POST", f"/api/v1/referrals/{referrals[3]['id']}/withdraw", "caseworker", 200, json={"note": "moved"})
    with services.uow() as uow:
        now = clock.now()
        uow.session.add(
            Notification(
                id=DELIVERY,
                partner_id=MEDICAL,
                channel="webhook",
                event_id="e-fuzz",
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
    drain(services)
    integrate_all(services)
    clock.advance(days=8)  # the unanswered offers are overdue now
    duplicates = call("GET", "/api/v1/duplicates", "supervisor", 200)["items"]
    assert duplicates, "the seeded world has a possible duplicate to decide"
    return World(
        app=app,
        services=services,
        tokens=tokens,
        ids={
            "referral_id": [r["id"] for r in referrals],
            "subject_id": [r["subject_id"] for r in referrals],
            "assignment_id": sorted(by_referral.values()),
            "partner_id": [MEDICAL, LEGAL, QUETTA],
            "duplicate_id": [d["id"] for d in duplicates],
            "delivery_id": [DELIVERY],
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[World]:
    home = tmp_path_factory.mktemp("fuzz") / "instance"
    shutil.copytree(migrated_template, home)
    clock = FakeClock()
    # The fuzz's own tokens never fail, but its invalid requests are many: failed authentications (the
    # only ones the API limiter counts) must not turn the run into a stream of 429s.
    # /metrics on, as in production: the role tokens are not its token, so it answers 401.
    settings_ = embedded_settings(
        home, REFERRAL_RATELIMIT_API_AUTH_FAILURES="100000 per minute", REFERRAL_METRICS_TOKEN="scrape-" + "f" * 40
    )
    services = bootstrap(settings_, clock=clock)
    app = create_app(services, {"TESTING": True})
    world = _seed(services, app, clock)
    # The fuzzed app serves the document the tests were made from.
    assert app.test_client().get("/api/v1/openapi.json").get_json() == DOCUMENT
    KNOWN_IDS.update(world.ids)
    TOKENS.update(world.tokens)
    yield world
    KNOWN_IDS.clear()
    TOKENS.clear()
    if world.tally:
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / "fuzz-summary.json").write_text(json.dumps(world.summary(), indent=1) + "\n")
    services.dispose()


def _served_document() -> dict[str, Any]:
    """The document as the service serves it, read once at import: schemathesis makes one test per operation
    at collection. It is built from the routes alone, so an empty instance serves the same one."""
    with tempfile.TemporaryDirectory(prefix="referral-fuzz-doc-") as tmp:
        settings_ = embedded_settings(Path(tmp))
        create_keyring(settings_.keyring_path)
        services = bootstrap(settings_)
        try:
            resp = create_app(services, {"TESTING": True}).test_client().get("/api/v1/openapi.json")
        finally:
            services.dispose()
    assert resp.status_code == 200, resp.status_code
    document: dict[str, Any] = resp.get_json()
    return document


DOCUMENT = _served_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Real ids by path-parameter name, filled by the `world` fixture before the first case is drawn.
KNOWN_IDS: dict[str, list[str]] = {}
# The role of the test running now (the `acting` fixture) and each role's token (the `world` fixture).
ACTING: dict[str, str] = {}
TOKENS: dict[str, str] = {}


# Coverage-phase cases are built at collection, before any role acts: they carry this, and the test swaps
# in the acting role's token when it sends them.
PLACEHOLDER = "token-of-the-acting-role"


@schema.auth(refresh_interval=None)  # no caching: the role changes from test to test
class RoleToken:
    """Schemathesis sets the bearer token itself, so a case that leaves it out on purpose (a negative case
    testing the 401) is sent without it."""

    def get(self, case: Any, context: Any) -> str:
        return TOKENS.get(ACTING.get("role", ""), PLACEHOLDER)

    def set(self, case: Any, data: str, context: Any) -> None:
        if case.headers is None:
            case.headers = {}
        case.headers["Authorization"] = f"Bearer {data}"


def _known(name: str, fallback: str, index: int) -> str:
    ids = KNOWN_IDS.get(name)
    return ids[index % len(ids)] if ids else fallback


@schema.hook
def flatmap_path_parameters(_: Any, path_parameters: dict[str, Any] | None) -> Any:
    # Half of the time an id that exists, so the views' access rules and state checks are reached too.
    if not path_parameters:  # an operation without ids in its path
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.one_of(st.just(value), st.integers(0, 63).map(functools.partial(_known, name, value)))
            for name, value in path_parameters.items()
        }
    )


# A valid body per operation: random bodies seldom pass the views' own rules (a district from the official
# list, a note for "other"), so a third of the bodies is one of these, and a third one of these with a
# single field taken from the generated body, so the views' paths past validation are fuzzed too.
VALID_BODIES: dict[str, list[dict[str, Any]]] = {
    "POST /api/v1/referrals": [
        referral_body(subject__cnic=None, subject__phone=None),
        referral_body(needs=["legal_aid"], risk_level="critical", consent__share=["contact", "identity"]),
    ],
    "POST /api/v1/partners": [partner(id="p-fuzz-new", name="Fuzz Organisation", services=["shelter"])],
    "POST /api/v1/assignments/{assignment_id}/decline": [{"reason": "no_capacity", "note": "full this week"}],
    "POST /api/v1/assignments/{assignment_id}/followups": [{"outcome": "contacted", "note": "phoned"}],
    "POST /api/v1/assignments/{assignment_id}/close": [{"outcome": "services_delivered", "services_delivered": []}],
    "POST /api/v1/referrals/{referral_id}/withdraw": [{"note": "moved away"}],
    "POST /api/v1/referrals/{referral_id}/reopen": [{"note": "back again"}],
    "POST /api/v1/referrals/{referral_id}/consent/withdraw": [{}],
    "POST /api/v1/duplicates/{duplicate_id}/confirm": [{}],
    "POST /api/v1/duplicates/{duplicate_id}/dismiss": [{}],
}


@schema.hook
def flatmap_case(context: Any, case: Any) -> Any:
    valid = VALID_BODIES.get(f"{context.operation.method.upper()} {context.operation.path}")
    # Positive cases only: a negative case must reach the service as generated (negative_data_rejection).
    if not valid or not isinstance(case.body, dict) or case.meta is None or case.meta.generation.mode.is_negative:
        return st.just(case)
    generated = case.body
    bodies = [st.just(generated), st.sampled_from(valid).map(copy.deepcopy)]
    if generated:
        bodies.append(
            st.tuples(st.sampled_from(valid), st.sampled_from(sorted(generated))).map(
                lambda pick: {**copy.deepcopy(pick[0]), pick[1]: generated[pick[1]]}
            )
        )
    return st.one_of(bodies).map(functools.partial(_with_body, case))


def _with_body(case: Any, body: dict[str, Any]) -> Any:
    case.body = body
    return case


@pytest.fixture
def acting(role: str) -> Iterator[str]:
    ACTING["role"] = role
    yield role
    ACTING.clear()


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM_SEED,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz(case: Any, world: World, acting: str) -> None:
    # A coverage case is shared by the six roles' tests: the token goes in the request, never in the case.
    token = {"Authorization": f"Bearer {world.tokens[acting]}"}
    built_before = case.headers is not None and case.headers.get("Authorization") == f"Bearer {PLACEHOLDER}"
    response = case.call_and_validate(app=world.app, headers=token if built_before else None, checks=CHECKS)
    world.tally[(f"{case.method.upper()} {case.operation.path}", acting, response.status_code)] += 1


# -- the checks themselves: each catches the fault it is named for ------------------------------------
BROKEN_ANSWERS = {
    "server error": (
        lambda: ({"error": {"code": "internal_error", "message": "x", "fields": {}}}, 500),
        "Server error",
    ),
    "undocumented status": (
        lambda: ({"error": {"code": "teapot", "message": "x", "fields": {}}}, 418),
        "Undocumented status code",
    ),
    "body breaks its schema": (lambda: ({"id": 7, "name": None}, 200), "Response violates schema"),
    "undocumented content type": (
        lambda: Response("<p>partner</p>", 200, mimetype="text/html"),
        "Undocumented Content-Type",
    ),
    "header breaks its schema": (
        lambda: Response(
            json.dumps({"error": {"code": "too_many_requests", "message": "x", "fields": {}}}),
            429,
            mimetype="application/json",
            headers={"Retry-After": "soon"},
        ),
        "Response header does not conform to the schema",
    ),
}


@pytest.mark.parametrize("fault", sorted(BROKEN_ANSWERS))
def test_each_check_catches_the_fault_it_is_named_for(fault: str, app: Flask, make_user: Any) -> None:
    """A view made to answer wrongly: the fuzz's checks fail on it, so a green fuzz means they held."""
    answer, title = BROKEN_ANSWERS[fault]
    app.view_functions["api.get_partner"] = lambda partner_id: answer()
    case = schema["/api/v1/partners/{partner_id}"]["GET"].Case(path_parameters={"partner_id": MEDICAL})
    with pytest.raises(FailureGroup) as caught:
        case.call_and_validate(app=app, headers=make_user("caseworker").headers, checks=CHECKS)
    assert title in str(caught.value), str(caught.value)
