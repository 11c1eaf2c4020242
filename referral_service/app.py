"""Flask application factory."""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
import uuid
from datetime import date, datetime
from typing import Any

from flask import Flask, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from referral_service.bootstrap import Services
from referral_service.domain.errors import DomainError
from referral_service.services.access import PURPOSE_PATTERN, RequestContext, enter_request, leave_request
from schemas.errors import ErrorSchema

log = logging.getLogger(__name__)
# One line per request: address, method, route template, status, bytes, time, request id.
access_log = logging.getLogger("referral_service.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_BODY_BYTES = 256 * 1024
HSTS = "max-age=31536000; includeSubDomains"
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class IsoJSONProvider(DefaultJSONProvider):
    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime | date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


class Metrics:
    """One registry per app, so several apps (tests) never collide on global metric names.

    Under gunicorn (`serve`) each worker process counts its own requests, and a scrape is answered by
    whichever worker gets it. With PROMETHEUS_MULTIPROC_DIR set (`serve` sets it), prometheus-client's
    multiprocess mode keeps every worker's samples in files there, and a scrape sums them all: the
    counters and histograms are then registered nowhere, and the scrape registry reads the files.
    """

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        own = None if shared else self.registry
        self.requests = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"], registry=own)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency", ["endpoint"], registry=own)
        if shared:
            MultiProcessCollector(self.registry, path=shared)
        # Asked of the database at each scrape: the same answer whichever worker is asked.
        self.registry.register(OutboxCollector(services))
        self.registry.register(DamageCollector(services))


class OutboxCollector(Collector):
    """`outbox_pending_messages`: committed events not yet published, counted at scrape time."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> list[Metric]:
        from referral_service.db.models import OutboxMessage

        try:
            with self.services.session_factory() as session:
                pending = float(
                    session.scalar(
                        select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
                    )
                    or 0
                )
        except OperationalError:
            pending = float("nan")
        return [GaugeMetricFamily("outbox_pending_messages", "Committed events not yet published", value=pending)]


class DamageCollector(Collector):
    """`damaged_records_total{table}`: reads that met a damaged record, from the services' DamageReporter."""

    TABLES = ("subject_keys", "subjects", "referrals", "assignments", "followups", "case_notes")

    def __init__(self, services: Services) -> None:
        self.damage = services.damage

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "damaged_records",
            "Reads that met a stored key or sealed field that does not open (run 'referral-service records check')",
            labels=["table"],
        )
        counts = self.damage.counts()
        for table in sorted(set(self.TABLES) | set(counts)):  # zeros too, so rate() works from the start
            family.add_metric([table], counts.get(table, 0))
        return [family]


def error_response(status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> Any:
    # "fields" is always present (empty when no field is to blame): clients read it without a key check.
    # The one error schema every operation declares writes the body, as the views' schemas write theirs.
    body = ErrorSchema().dump({"error": {"code": code, "message": message, "field_errors": fields or {}}})
    return jsonify(body), status


def _too_large() -> Any:
    return error_response(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")


def create_app(services: Services, config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.json = IsoJSONProvider(app)
    secret = services.settings.secret_key or services.keys.derive_secret("flask-session").hex()
    app.config.update(
        SECRET_KEY=secret,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_SECURE=services.settings.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.config.update(config or {})
    app.extensions["referral_services"] = services
    metrics = Metrics(services)
    app.extensions["referral_metrics"] = metrics

    from referral_service.api import bp as api_bp
    from referral_service.api.ops import ops_bp
    from referral_service.ratelimit import init_limiter, retry_after_seconds
    from referral_service.web import init_app as init_web

    if services.settings.trusted_proxies:
        # Only the addresses and scheme that many proxies appended are believed, never a client's own.
        hops = services.settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    @app.before_request
    def _refuse_oversized_body() -> Any:
        # First of all before_request hooks (CSRF reads the form): refused by the declared length, unread.
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _too_large()
        return None

    @app.before_request
    def _refuse_nul() -> Any:
        # PostgreSQL text cannot hold U+0000: looking up an id that has one fails in the driver (a 500 on
        # every route with an id). No record has such an id, so it is simply not found.
        if any("\x00" in str(value) for value in (request.view_args or {}).values()):
            return error_response(404, "not_found", "no such record")
        return None

    app.register_blueprint(api_bp)
    app.register_blueprint(ops_bp)
    init_web(app)
    init_limiter(app, services.settings)

    @app.before_request
    def _start_timer() -> Any:
        g.started = time.perf_counter()
        # Every audit entry of this request carries its id (echoed as X-Request-Id) and, when the
        # caller names one, the purpose of use (X-Purpose-Of-Use, a code such as TREAT or HOPERAT).
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        purpose = request.headers.get("X-Purpose-Of-Use")
        if purpose is not None and not PURPOSE_PATTERN.fullmatch(purpose):
            return error_response(
                400,
                "bad_request",
                "X-Purpose-Of-Use is a code of letters, digits, '.', '_' or '-' (at most 40), e.g. TREAT",
            )
        via = "api" if request.path.startswith("/api/") else "web"
        g.request_token = enter_request(RequestContext(g.request_id, purpose, None, via))
        return None

    @app.teardown_request
    def _end_request_context(_exc: BaseException | None) -> None:
        token = g.pop("request_token", None)
        if token is not None:
            leave_request(token)

    @app.after_request
    def _observe(response: Any) -> Any:
        # The route's template (`/api/v1/referrals/<referral_id>`), never the path or query as sent: a
        # client can put anything there, a person's name included, and this goes to metrics and the log.
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in _METHODS else "OTHER"  # a method is any token a client likes
        metrics.requests.labels(method, endpoint, str(response.status_code)).inc()
        elapsed = time.perf_counter() - g.started if "started" in g else 0.0
        if "started" in g:
            metrics.latency.labels(endpoint).observe(elapsed)
        access_log.info(
            '%s "%s %s" %s %s %.0fms %s',
            request.remote_addr,
            method,
            endpoint,
            response.status_code,
            response.calculate_content_length() or "-",
            elapsed * 1000,
            g.get("request_id", "-"),
        )
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        if request.is_secure:  # over plain http the header means nothing and browsers ignore it
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Any:
        return error_response(exc.status, exc.code, exc.message, exc.fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            return _too_large()
        if exc.code == 429:
            retry = retry_after_seconds()
            response, status = error_response(
                429, "too_many_requests", f"too many failed attempts from this address; try again in {retry} s"
            )
            response.headers["Retry-After"] = str(retry)
            return response, status
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        valid_methods = getattr(exc, "valid_methods", None)
        if valid_methods:  # a 405 must say which methods the resource takes
            response.headers["Allow"] = ", ".join(valid_methods)
        return response, status

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> Any:
        log.warning("database unavailable: %s", type(exc.orig).__name__ if exc.orig else "OperationalError")
        return error_response(503, "unavailable", "the database is unavailable; try again shortly")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        # Log the type and where, never the request body or the exception text (it may quote data).
        log.error(
            "unhandled %s on %s %s\n%s",
            type(exc).__name__,
            request.method,
            request.url_rule,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return error_response(500, "internal_error", "something went wrong on our side; it has been logged")

    return app
