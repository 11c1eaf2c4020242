from __future__ import annotations

from pathlib import Path
from typing import Any

from referral_service.app import create_app
from referral_service.bootstrap import bootstrap
from tests.conftest import embedded_settings
from tests.factories import referral_body


def test_health_and_readiness_on_the_embedded_profile(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_fails_with_503_when_the_database_is_gone(client: Any, services: Any, home: Any) -> None:
    services.engine.dispose()
    for path in home.glob("referrals.sqlite3*"):
        path.unlink()
    (home / "referrals.sqlite3").mkdir()  # a directory where the database file was: unopenable
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["database"] == "unreachable"


def test_metrics_count_requests_and_pending_outbox_events(home: Path, clock: Any, make_user: Any) -> None:
    token = "scrape-" + "t" * 40
    services = bootstrap(embedded_settings(home, REFERRAL_METRICS_TOKEN=token), clock=clock)
    client = create_app(services, {"TESTING": True}).test_client()
    cw = make_user("caseworker")
    assert client.post("/api/v1/referrals", json=referral_body(), headers=cw.headers).status_code == 201
    text = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    services.dispose()
    assert 'http_requests_total{endpoint="/api/v1/referrals",method="POST",status="201"} 1.0' in text
    assert "outbox_pending_messages 1.0" in text
