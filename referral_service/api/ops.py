"""Operations endpoints: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, request
from kombu import Connection
from sqlalchemy import text

from referral_service.api import bp, services
from referral_service.api.openapi import build_spec, operation
from referral_service.domain.errors import Unauthenticated
from schemas import HealthSchema, ReadinessSchema

ops_bp = Blueprint("ops", __name__)


@ops_bp.get("/healthz")
@operation("Liveness: the process answers", response=HealthSchema, security="none")
def healthz() -> Any:
    return {"status": "ok"}


@ops_bp.get("/readyz")
@operation(
    "Readiness: the database and the broker are reachable",
    response=ReadinessSchema,
    security="none",
    others={503: ("not ready: a check failed (the reason is logged, not shown)", ReadinessSchema)},
)
def readyz() -> Any:
    checks: dict[str, str] = {}
    svc = services()
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready; the reason is logged, not shown
        current_app.logger.warning("readiness: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
    if svc.settings.broker_is_durable:
        try:
            with Connection(svc.settings.broker_url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception:  # noqa: BLE001
            current_app.logger.warning("readiness: broker unreachable", exc_info=True)
            checks["broker"] = "unreachable"
    else:
        checks["broker"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503


@ops_bp.get("/metrics")
@operation(
    "Prometheus metrics, for a scraper holding REFERRAL_METRICS_TOKEN",
    security="metrics",
    response={"type": "string"},
    media_type="text/plain",
    errors={404: "no REFERRAL_METRICS_TOKEN is set: the endpoint is off"},
)
def metrics() -> Any:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    # Only for a scraper holding REFERRAL_METRICS_TOKEN: the counters show who is being tried and how.
    token = services().settings.metrics_token
    if token is None:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthenticated("send Authorization: Bearer <REFERRAL_METRICS_TOKEN>")
    return Response(generate_latest(current_app.extensions["referral_metrics"].registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
@operation("This document", response={"type": "object"}, security="none")
def openapi() -> Any:
    return build_spec(current_app)
