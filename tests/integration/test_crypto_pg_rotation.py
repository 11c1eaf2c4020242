"""On PostgreSQL: KEK rotation under load (killed half-way, resumed, old KEK retired) and blind-index re-keying."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import delete, select

from referral_service.app import create_app
from referral_service.bootstrap import Services
from referral_service.db.models import BlindIndex, PossibleDuplicate
from referral_service.services import keys, users
from tests.e2e.test_crypto_rotation_under_load import rotate_under_load
from tests.factories import referral_body
from tests.integration.test_crypto_pg_leak_scan import pg_services, scratch_database  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def test_rotation_on_postgresql_survives_load_and_a_kill_and_completes_on_resume(pg_services: Services) -> None:  # noqa: F811
    token = users.create_user(pg_services, name="rotation-supervisor", role="supervisor")["token"]
    app = create_app(pg_services, {"TESTING": True})
    rotate_under_load(pg_services, app, {"Authorization": f"Bearer {token}"})


def test_blind_index_reindex_on_postgresql_keeps_finding_possible_duplicates(pg_services: Services) -> None:  # noqa: F811
    token = users.create_user(pg_services, name="reindex-caseworker", role="caseworker")["token"]
    client = create_app(pg_services, {"TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def submit(n: int, cnic_form: str = "{:05d}-{:07d}-3") -> str:
        body = referral_body(
            subject__full_name=f"Person {n}", subject__cnic=cnic_form.format(42101, n), subject__phone=None
        )
        resp = client.post("/api/v1/referrals", json=body, headers=headers)
        assert resp.status_code == 201, resp.get_json()
        return str(resp.get_json()["subject_id"])

    subjects = [submit(n) for n in range(6)]
    keys.begin_reindex(pg_services)
    keys.reindex_batch(pg_services, 2)
    late = submit(50)
    with pg_services.uow() as uow:  # as if written by a process that had not seen the transition
        uow.session.execute(delete(BlindIndex).where(BlindIndex.subject_id == late, BlindIndex.version == 2))
        uow.commit()

    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env.update(REFERRAL_HOME=str(pg_services.settings.home), REFERRAL_DATABASE_URL=pg_services.settings.database_url)
    done = subprocess.run(
        [sys.executable, "-m", "referral_service", "keys", "reindex", "--batch-size", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "version 2 is active" in done.stdout
    with pg_services.uow() as uow:
        versions = set(uow.session.scalars(select(BlindIndex.version)))
    assert versions == {2}
    for n, subject_id in [*enumerate(subjects), (50, late)]:
        repeat = submit(n, "{:05d}{:07d}3")  # undashed CNIC, found through version 2
        with pg_services.uow() as uow:
            earlier = uow.session.scalars(
                select(PossibleDuplicate.earlier_subject_id).where(PossibleDuplicate.subject_id == repeat)
            ).all()
        assert repeat != subject_id and earlier == [subject_id]
