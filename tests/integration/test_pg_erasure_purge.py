"""Erasure and init's data upgrades on PostgreSQL: old row versions leave the tables' data files.

A plain UPDATE or DELETE leaves the old tuple (the wrapped key; the blind-index rows) in the heap file, and a
plain VACUUM only marks its space free (this test fails with it: the deleted index rows stay readable);
`subjects erase` rewrites subject_keys and blind_indexes (VACUUM FULL) after the commit, and `init` the
tables whose plaintext it converted (followups, outbox, idempotency_keys).
The test reads the table's file on disk, which needs access to the data directory (root, or the postgres user).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from referral_service.bootstrap import Services
from referral_service.db.models import FollowUp, SubjectKey
from referral_service.domain.commands import AcceptAssignment, RecordFollowUp
from referral_service.domain.model import Actor, Role
from referral_service.services import assignments, referrals, subjects, users
from referral_service.services.assignments import route_open_needs
from referral_service.services.subjects import erase_subject
from referral_service.services.upgrades import run_upgrades
from schemas import ReferralInputSchema
from tests.factories import referral_body
from tests.integration.harness import World
from tests.servers import PG_ADMIN_URL

pytestmark = pytest.mark.integration

# Another database of the same server (the one the tests' scratch databases are made from).
OTHER_DATABASE = PG_ADMIN_URL.replace("+psycopg", "")


def _submit(services: Services, actor: Actor, **overrides: Any) -> dict[str, Any]:
    cmd = ReferralInputSchema().load(referral_body(**overrides))
    return referrals.submit_referral(services, cmd, actor).body


def _data_file(services: Services, table: str) -> bytes:
    """The table's main data file as it is on disk, after a checkpoint wrote every dirty page."""
    with services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
        directory = conn.execute(text("SHOW data_directory")).scalar_one()
        relative = conn.execute(text("SELECT pg_relation_filepath(:t)"), {"t": table}).scalar_one()
    path = Path(directory) / relative
    try:
        return path.read_bytes()
    except PermissionError:
        pytest.skip(f"{path} is not readable by this user (run as root or postgres)")


def _wrapped_key(services: Services, subject_id: str) -> bytes:
    with services.uow() as uow:
        [wrapped] = uow.session.scalars(select(SubjectKey.wrapped).where(SubjectKey.subject_id == subject_id)).all()
    assert wrapped
    return wrapped


def test_erasure_removes_the_old_key_and_index_rows_from_the_tables_data_files(pg_services: Services) -> None:
    created = users.create_user(pg_services, name="cw-erasure-purge", role="caseworker")
    actor = Actor(created["id"], Role.CASEWORKER)
    kept = _submit(
        pg_services,
        actor,
        subject__full_name="Gul Meena",
        subject__cnic="17301-7654321-8",
        subject__phone="+923451112223",
    )
    erased = _submit(pg_services, actor)  # the newest rows: lowest on their pages, where freed space stays as is
    erased_key = _wrapped_key(pg_services, erased["subject_id"])
    kept_key = _wrapped_key(pg_services, kept["subject_id"])
    erased_id = erased["subject_id"].encode()
    assert erased_key in _data_file(pg_services, "subject_keys"), "the scan cannot see a live key"
    assert erased_id in _data_file(pg_services, "blind_indexes"), "the scan cannot see a live index row"

    assert not erase_subject(pg_services, erased["subject_id"])  # no warnings

    heap = _data_file(pg_services, "subject_keys")
    assert (erased_key in heap, kept_key in heap) == (False, True), "(erased key, other key) found in the file"
    # The deleted blind-index rows name the subject; with the keyring their hashes confirm a guessed CNIC.
    relations = ("blind_indexes", "uq_blind_indexes_subject_column_version")
    still_naming = [r for r in relations if erased_id in _data_file(pg_services, r)]
    assert still_naming == [], "the erased subject's deleted index rows are still in these files"
    assert kept["subject_id"].encode() in _data_file(pg_services, "blind_indexes")
    with pg_services.uow() as uow:
        row = uow.session.scalars(select(SubjectKey).where(SubjectKey.subject_id == erased["subject_id"])).one()
        assert row.wrapped is None and row.destroyed_at is not None


def _open_transaction_elsewhere(finish_after: float | None) -> tuple[threading.Thread, threading.Event]:
    """A transaction in another database of the same server that has written (so it holds a transaction
    id), begun now; it ends after `finish_after` seconds, or when the returned event is set."""
    done, begun = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(OTHER_DATABASE) as conn:
            conn.execute("SELECT txid_current()")
            begun.set()
            done.wait(finish_after)
            conn.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert begun.wait(10), "the other transaction did not begin"
    return thread, done


def test_the_purge_waits_for_a_transaction_of_another_database_open_since_before_the_erasure(
    pg_services: Services,
) -> None:
    # VACUUM keeps what a transaction running anywhere on the server may still see: without the wait,
    # the erased key stayed in the file while another database's transaction was open.
    created = users.create_user(pg_services, name="cw-erasure-wait", role="caseworker")
    erased = _submit(pg_services, Actor(created["id"], Role.CASEWORKER))
    erased_key = _wrapped_key(pg_services, erased["subject_id"])
    thread, _done = _open_transaction_elsewhere(finish_after=1.5)
    started = time.monotonic()
    assert not erase_subject(pg_services, erased["subject_id"])
    assert time.monotonic() - started >= 1.0, "the purge did not wait for the open transaction"
    assert erased_key not in _data_file(pg_services, "subject_keys")
    thread.join(5)


def test_a_transaction_still_open_after_the_wait_is_named_in_a_warning(
    pg_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subjects, "PURGE_WAIT_SECONDS", 0.3)
    created = users.create_user(pg_services, name="cw-erasure-warn", role="caseworker")
    erased = _submit(pg_services, Actor(created["id"], Role.CASEWORKER))
    thread, done = _open_transaction_elsewhere(finish_after=None)
    try:
        warnings = erase_subject(pg_services, erased["subject_id"])
    finally:
        done.set()
        thread.join(5)
    assert len(warnings) == 1 and "still running after 0.3 s" in warnings[0] and "VACUUM FULL" in warnings[0]
    assert erased["subject_id"] not in warnings[0]


FREE_TEXT = "Met Zarmeena at her sister's house in Hayatabad"


def test_init_seals_old_free_text_outcomes_and_purges_them_and_plaintext_idempotency_keys(
    pg_services: Services,
) -> None:
    world = World(pg_services)
    partner_id = world.add_partner()
    referral_id = world.submit(world.caseworker())
    with pg_services.uow() as uow:
        [assignment_id] = route_open_needs(uow, pg_services, referral_id)
        uow.commit()
    staff, _token = world.partner_staff(partner_id)
    assignments.accept(pg_services, AcceptAssignment(assignment_id), staff)
    note = RecordFollowUp(assignment_id, "contacted", "asked for a female doctor")
    followup_id = assignments.record_followup(pg_services, note, staff)["id"]
    with pg_services.engine.begin() as conn:  # as an earlier version stored them
        conn.execute(text("UPDATE followups SET outcome = :o WHERE id = :id"), {"o": FREE_TEXT, "id": followup_id})
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, key, request_mac, status_code, response, created_at) "
                "VALUES (:u, 'old-Gul-Meena-retry', 'x', 201, '{}', now())"
            ),
            {"u": staff.user_id},
        )
    assert FREE_TEXT.encode() in _data_file(pg_services, "followups")

    report = run_upgrades(pg_services)
    assert (report.followups_sealed, report.idempotency_keys_dropped, report.warnings) == (1, 1, [])
    with pg_services.uow() as uow:
        followup = uow.session.get(FollowUp, followup_id)
        assert followup is not None and followup.outcome == "other"
    left = {
        "followups": FREE_TEXT.encode() in _data_file(pg_services, "followups"),
        "idempotency_keys": b"Gul-Meena" in _data_file(pg_services, "idempotency_keys"),
    }
    assert left == {"followups": False, "idempotency_keys": False}, "old row versions still in the data files"
    assert run_upgrades(pg_services).changed is False
