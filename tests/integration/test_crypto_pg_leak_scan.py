"""A `pg_dump` of a production-profile database holds none of the personal data that went in."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referral_service.app import create_app
from referral_service.bootstrap import Services, bootstrap, prepare_database
from referral_service.config import Settings
from referral_service.crypto.keyring import create_keyring
from referral_service.services import partners, users
from schemas import PartnerSchema
from tests.e2e.test_crypto_leak_scan import add_marked_followup, submit_marked_referrals
from tests.factories import partner
from tests.leaks import CANARY, all_needles, find_leaks
from tests.servers import scratch_database as new_database

pytestmark = pytest.mark.integration

PG_HOST, PG_USER = "127.0.0.1", "postgres"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """The name of a fresh database for this test alone, dropped afterwards."""
    with new_database("crypto_leak") as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def pg_services(scratch_database: str, tmp_path: Path) -> Iterator[Services]:
    settings = Settings.from_env(
        {
            "REFERRAL_HOME": str(tmp_path / "home"),
            "REFERRAL_DATABASE_URL": f"postgresql+psycopg://{PG_USER}@{PG_HOST}:5432/{scratch_database}",
        }
    )
    create_keyring(settings.keyring_path)
    services = bootstrap(settings)
    prepare_database(services)
    yield services
    services.dispose()


def _headers(services: Services, role: str, partner_id: str | None = None) -> dict[str, str]:
    created = users.create_user(services, name=f"{role}-{secrets.token_hex(3)}", role=role, partner_id=partner_id)
    return {"Authorization": f"Bearer {created['token']}"}


def test_no_marker_in_any_form_in_a_pg_dump(pg_services: Services, scratch_database: str) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        _unavailable("pg_dump is not installed")
    partners.upsert_partners(pg_services, [PartnerSchema().load(partner(name=CANARY))])
    client: Any = create_app(pg_services, {"TESTING": True}).test_client()
    cw = _headers(pg_services, "caseworker")
    first, _ = submit_marked_referrals(client, cw)
    add_marked_followup(
        pg_services, client, first["id"], cw, lambda partner_id: _headers(pg_services, "partner", partner_id)
    )

    dump = subprocess.run(
        [str(pg_dump), "-h", PG_HOST, "-U", PG_USER, "--no-owner", scratch_database],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    assert b"CREATE TABLE public.subjects" in dump
    assert find_leaks(dump, [CANARY])  # plain text in the dump is found: the scan is real
    assert find_leaks(dump, all_needles()) == []
