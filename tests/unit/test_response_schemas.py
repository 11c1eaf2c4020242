"""Every JSON answer is dumped by the response schema its operation declares (api.openapi.operation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask

from referral_service.api.openapi import OPERATION_ATTRIBUTE, documented_rules, operation
from schemas import ConsentWithdrawnSchema, ReadinessSchema, ReferralStateSchema

PKT = timezone(timedelta(hours=5))


@dataclass
class Moved:
    id: str
    reference: str
    status: str
    consent_withdrawn_at: datetime
    caseworker_id: str  # not in the schema


def _app(view: Any, rule: str = "/x") -> Flask:
    app = Flask(__name__)
    app.testing = True  # a view's error propagates to the test
    app.add_url_rule(rule, view_func=view)
    return app


def test_a_field_the_schema_does_not_name_never_reaches_the_client() -> None:
    @operation("x", response=ReferralStateSchema)
    def view() -> Any:
        return {
            "id": "r1",
            "reference": "VAN-2026-000001",
            "status": "routing",
            "subject_id": "s1",
            "consent_share": ["medical"],
        }

    body = _app(view).test_client().get("/x").get_json()
    assert body == {"id": "r1", "reference": "VAN-2026-000001", "status": "routing"}


def test_a_view_returns_plain_data_and_datetimes_are_iso_8601_with_their_offset() -> None:
    at = datetime(2026, 3, 1, 9, 30, 15, 120000, tzinfo=PKT)

    @operation("x", response=ConsentWithdrawnSchema, status=201)
    def view() -> Any:
        return Moved("r1", "VAN-2026-000001", "closed", at, "u1")

    answer = _app(view).test_client().get("/x")
    assert answer.status_code == 201
    assert answer.get_json() == {
        "id": "r1",
        "reference": "VAN-2026-000001",
        "status": "closed",
        "consent_withdrawn_at": "2026-03-01T09:30:15.120000+05:00",
    }


def test_another_declared_status_is_dumped_by_its_own_schema_and_an_undeclared_one_is_refused() -> None:
    @operation("x", response=ReadinessSchema, others={503: ("not ready", ReadinessSchema)})
    def view() -> Any:
        return {"status": "not_ready", "checks": {"database": "unreachable", "broker": "ok", "why": "secret"}}, 503

    answer = _app(view).test_client().get("/x")
    assert answer.status_code == 503
    assert answer.get_json() == {"status": "not_ready", "checks": {"database": "unreachable", "broker": "ok"}}

    @operation("y", response=ReadinessSchema)
    def undeclared() -> Any:
        return {"status": "ready"}, 202

    with pytest.raises(TypeError, match="does not declare"):
        _app(undeclared).test_client().get("/x")


def test_every_api_and_ops_view_answers_through_its_declared_operation(app: Flask) -> None:
    for rule in documented_rules(app):
        view = app.view_functions[rule.endpoint]
        assert getattr(view, OPERATION_ATTRIBUTE, None) is not None, rule.rule
        assert hasattr(view, "__wrapped__"), f"{rule.rule}: its operation does not shape the answer"
