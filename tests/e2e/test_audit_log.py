"""The audit log on the embedded profile: written with the action, sealed, sequenced, verified.

Tampering directly in SQL (`tests/audit_tamper.py`) is detected and the first bad entry named;
proofs verify and every corruption of one is rejected; erasure leaves the log verifiable; a process
killed between an action and its commit leaves neither behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from referral_service.audit import verifier
from referral_service.audit.log import AuditFilter
from referral_service.bootstrap import Services
from referral_service.db.models import AuditCheckpoint, AuditEntry, Referral
from referral_service.services.audit import integrate_all, integrate_once
from referral_service.services.subjects import erase_subject
from tests.audit_tamper import SIZE, TAMPERINGS, Tampering, fill_log
from tests.factories import referral_body


def _entries(services: Services, **where: Any) -> list[Any]:
    with services.uow() as uow:
        rows = services.audit.query(uow.session, AuditFilter(**where), limit=500)
        return [services.audit.open_entry(uow.session, row) for row in rows]


def test_an_action_and_its_audit_entry_are_written_together_and_read_back_by_blind_index(
    services: Services, client: Any, make_user: Any
) -> None:
    caseworker, supervisor, other = make_user("caseworker"), make_user("supervisor"), make_user("caseworker")
    created = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()
    assert client.get(f"/api/v1/referrals/{created['id']}", headers=supervisor.headers).status_code == 200
    assert client.get(f"/api/v1/referrals/{created['id']}", headers=other.headers).status_code == 403

    entries = _entries(services, referral_id=created["id"])
    seen = {(e.record["actor_id"], e.record["action"], e.record["outcome"]) for e in entries}
    assert (supervisor.actor.user_id, "referral.read", "allowed") in seen
    assert (other.actor.user_id, "referral.read", "denied") in seen  # the refusal outlived its rollback
    reveal = next(
        e for e in entries if e.record["actor_id"] == supervisor.actor.user_id and "full_name" in e.details["fields"]
    )
    assert reveal.record["subject_id"] == created["subject_id"] and reveal.details_state == "ok"
    assert reveal.record["role"] == "supervisor" and reveal.record["request_id"]
    assert all(e.index is None for e in entries)  # written with the action; sequenced later
    integrate_all(services)
    assert all(e.index is not None for e in _entries(services, referral_id=created["id"]))
    by_actor = _entries(services, actor_id=other.actor.user_id)
    assert {(e.record["action"], e.record["outcome"]) for e in by_actor} == {("referral.read", "denied")}
    # A refused look at the file is in the person's own access report too.
    about_person = _entries(services, subject_id=created["subject_id"])
    assert (other.actor.user_id, "denied") in {(e.record["actor_id"], e.record["outcome"]) for e in about_person}


def test_nothing_in_an_entry_is_stored_in_the_clear(services: Services, client: Any, make_user: Any) -> None:
    caseworker = make_user("caseworker")
    created = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()
    client.get(f"/api/v1/referrals/{created['id']}", headers=caseworker.headers)
    integrate_all(services)
    with services.uow() as uow:
        raw = b"".join(
            b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)
            for row in uow.session.execute(select(AuditEntry.__table__)).all()
        )
    for clear in (created["id"], created["subject_id"], caseworker.actor.user_id, "referral.read", "full_name"):
        assert clear.encode() not in raw


def test_an_intact_log_verifies_and_each_checkpoint_is_signed_by_the_published_key(services: Services) -> None:
    fill_log(services)
    with services.uow() as uow:
        report = services.audit.verify(uow.session)
        notes = uow.session.scalars(select(AuditCheckpoint.note).order_by(AuditCheckpoint.size)).all()
    assert report.ok, report.line()
    assert (report.entries, report.first_bad) == (SIZE, None)
    key = services.audit.keys.verifier_key
    assert [verifier.open_checkpoint(n, str(key)).size for n in notes] == [10, 20, 30]
    assert verifier.open_checkpoint(report.head or "", key).root_hash == report.root


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=lambda t: t.name)
def test_tampering_in_sql_is_detected_and_the_first_bad_entry_named(services: Services, tampering: Tampering) -> None:
    fill_log(services)
    with services.engine.begin() as conn:
        tampering.apply(conn)
    with services.uow() as uow:
        report = services.audit.verify(uow.session)
    assert not report.ok
    assert report.first_bad == tampering.first_bad, report.line()
    assert tampering.says in (report.problem or ""), report.line()


def test_a_cut_tail_with_its_checkpoints_is_caught_by_a_checkpoint_kept_elsewhere(services: Services) -> None:
    fill_log(services)
    with services.uow() as uow:
        kept = services.audit.latest_checkpoint(uow.session)  # what the auditor took home, size 30
    with services.engine.begin() as conn:  # back to the log as it was at size 20, checkpoints and all
        conn.exec_driver_sql("DELETE FROM audit_entries WHERE idx >= 20")
        conn.exec_driver_sql("DELETE FROM audit_nodes WHERE ((idx + 1) << level) > 20")
        conn.exec_driver_sql("DELETE FROM audit_checkpoints WHERE size > 20")
        root = conn.exec_driver_sql("SELECT root FROM audit_checkpoints WHERE size = 20").scalar_one()
        conn.exec_driver_sql("UPDATE audit_head SET size = 20, root = ?", (root,))
    with services.uow() as uow:
        alone = services.audit.verify(uow.session)
        against_kept = services.audit.verify(uow.session, earlier=kept)
    # The database alone is a consistent, earlier log: only a checkpoint kept elsewhere shows the cut.
    assert alone.ok and alone.entries == 20
    assert not against_kept.ok
    assert against_kept.first_bad == 20 and "were removed" in (against_kept.problem or ""), against_kept.line()


def test_the_log_extends_a_checkpoint_kept_from_earlier(services: Services) -> None:
    fill_log(services)
    with services.uow() as uow:
        first = services.audit.latest_checkpoint(uow.session)
    with services.uow() as uow:
        services.access.record(actor=None, action="records.check", referral_id=None)
        uow.commit()
    integrate_all(services)
    with services.uow() as uow:
        report = services.audit.verify(uow.session, earlier=first)
    assert report.ok and report.extends and report.entries == SIZE + 1


def test_inclusion_and_consistency_proofs_verify_and_every_corrupted_one_is_rejected(services: Services) -> None:
    fill_log(services)
    with services.uow() as uow:
        key = services.audit.keys.verifier_key
        head = verifier.open_checkpoint(services.audit.latest_checkpoint(uow.session), key)
        for index in range(SIZE):
            leaf, proof = services.audit.inclusion_proof(uow.session, index, SIZE)
            verifier.verify_inclusion(index, SIZE, leaf, proof, head.root_hash)
            for i in range(len(proof)):
                bad = [*proof]
                bad[i] = bad[i][:5] + bytes([bad[i][5] ^ 0x80]) + bad[i][6:]
                with pytest.raises(verifier.ProofError):
                    verifier.verify_inclusion(index, SIZE, leaf, bad, head.root_hash)
            with pytest.raises(verifier.ProofError):
                verifier.verify_inclusion(index, SIZE, leaf, proof[:-1], head.root_hash)
        older = uow.session.scalar(select(AuditCheckpoint.root).where(AuditCheckpoint.size == 10))
        assert older is not None
        proof = services.audit.consistency_proof(uow.session, 10, SIZE)
        verifier.verify_consistency(10, SIZE, proof, older, head.root_hash)
        for i in range(len(proof)):
            bad = [*proof]
            bad[i] = bytes(32)
            with pytest.raises(verifier.ProofError):
                verifier.verify_consistency(10, SIZE, bad, older, head.root_hash)
        with pytest.raises(ValueError):
            services.audit.inclusion_proof(uow.session, SIZE, SIZE + 1)


def test_after_erasure_the_details_read_as_erased_and_the_log_still_verifies(
    services: Services, client: Any, make_user: Any
) -> None:
    caseworker = make_user("caseworker")
    created = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()
    client.get(f"/api/v1/referrals/{created['id']}", headers=caseworker.headers)
    integrate_all(services)
    before = [e for e in _entries(services, subject_id=created["subject_id"]) if e.details_state == "ok"]
    assert any("full_name" in e.details["fields"] for e in before)

    erase_subject(services, created["subject_id"])
    integrate_all(services)
    after = {e.id: e for e in _entries(services, subject_id=created["subject_id"])}
    assert {after[e.id].details_state for e in before} == {"erased"}
    assert all(after[e.id].details is None and after[e.id].record for e in before)  # who and when stay
    assert any(e.record["action"] == "subject.erase" for e in after.values())
    with services.uow() as uow:
        report = services.audit.verify(uow.session)
    assert report.ok, report.line()


def _cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFERRAL_HOME": str(services.settings.home)}
    return subprocess.run(
        [sys.executable, "-m", "referral_service", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_verify_names_the_first_bad_entry_and_key_and_checkpoint_print_what_auditors_keep(
    services: Services, tmp_path: Path
) -> None:
    fill_log(services)
    key = _cli(services, "audit", "key")
    assert key.returncode == 0
    vkey = verifier.VerifierKey.parse(key.stdout.strip())
    exported = _cli(services, "audit", "checkpoint")
    assert exported.returncode == 0
    kept = tmp_path / "checkpoint.txt"
    kept.write_text(exported.stdout)
    assert verifier.open_checkpoint(exported.stdout, vkey).size >= SIZE
    ok = _cli(services, "audit", "verify", "--checkpoint", str(kept))
    assert ok.returncode == 0, ok.stderr
    assert "intact" in ok.stdout and "extends the given checkpoint" in ok.stdout

    with services.engine.begin() as conn:
        TAMPERINGS[0].apply(conn)
    bad = _cli(services, "audit", "verify")
    assert bad.returncode == 1
    assert "first bad entry: index 14" in bad.stderr


KILLED_ACTION = textwrap.dedent(
    """
    import os, sys, time
    from referral_service.bootstrap import bootstrap
    from referral_service.config import Settings
    from referral_service.db import session as db_session
    from referral_service.domain.model import Actor, Role
    from referral_service.services.referrals import get_referral

    services = bootstrap(Settings.from_env())
    real_commit = db_session.UnitOfWork.commit

    def stall(self):
        self.session.flush()  # the action and its audit entry are written, not committed
        print("flushed", flush=True)
        time.sleep(60)
        real_commit(self)

    db_session.UnitOfWork.commit = stall
    get_referral(services, sys.argv[1], Actor(sys.argv[2], Role.SUPERVISOR))
    """
)


def test_a_process_killed_between_a_read_and_its_commit_leaves_no_entry_and_showed_nothing(
    services: Services, client: Any, make_user: Any
) -> None:
    caseworker = make_user("caseworker")
    created = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()
    with services.uow() as uow:
        before = uow.session.scalar(select(func.count()).select_from(AuditEntry))
    env = {**os.environ, "REFERRAL_HOME": str(services.settings.home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_ACTION, created["id"], "supervisor-x"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "flushed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    with services.uow() as uow:
        after = uow.session.scalar(select(func.count()).select_from(AuditEntry))
        assert uow.session.get(Referral, created["id"]) is not None
    assert after == before  # no record of a read whose answer never left the process


KILLED_CHANGE = textwrap.dedent(
    """
    import sys, time
    from referral_service.bootstrap import bootstrap
    from referral_service.config import Settings
    from referral_service.db import session as db_session
    from referral_service.domain.commands import WithdrawReferral
    from referral_service.domain.model import Actor, Role
    from referral_service.services.referrals import withdraw_referral

    services = bootstrap(Settings.from_env())
    real_commit = db_session.UnitOfWork.commit

    def stall(self):
        self.session.flush()
        print("flushed", flush=True)
        time.sleep(60)
        real_commit(self)

    db_session.UnitOfWork.commit = stall
    withdraw_referral(services, WithdrawReferral(sys.argv[1], note="moved away"), Actor(sys.argv[2], Role.SUPERVISOR))
    """
)


def test_a_process_killed_between_a_change_and_its_commit_leaves_neither_the_change_nor_its_entry(
    services: Services, client: Any, make_user: Any
) -> None:
    caseworker = make_user("caseworker")
    created = client.post("/api/v1/referrals", json=referral_body(), headers=caseworker.headers).get_json()
    with services.uow() as uow:
        before = uow.session.scalar(select(func.count()).select_from(AuditEntry))
    env = {**os.environ, "REFERRAL_HOME": str(services.settings.home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHANGE, created["id"], "supervisor-y"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "flushed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    with services.uow() as uow:
        referral = uow.session.get(Referral, created["id"])
        assert referral is not None and referral.status != "withdrawn"
        assert uow.session.scalar(select(func.count()).select_from(AuditEntry)) == before
    # ...and the same move, let through, leaves both.
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_CHANGE.replace("time.sleep(60)", "pass"), created["id"], "supervisor-y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    actions = {(e.record["action"], e.record["actor_id"]) for e in _entries(services, referral_id=created["id"])}
    assert ("referral.withdraw", "supervisor-y") in actions
    assert integrate_once(services) > 0
    with services.uow() as uow:
        assert services.audit.verify(uow.session).ok


@pytest.mark.parametrize(
    "tampering",
    [t for t in TAMPERINGS if t.name in ("edit a detail", "delete an entry", "truncate the tail")],
    ids=lambda t: t.name,
)
def test_a_verify_split_over_processes_finds_what_one_process_finds(
    services: Services, tampering: Tampering, monkeypatch: pytest.MonkeyPatch
) -> None:
    from referral_service.audit import log

    monkeypatch.setattr(log, "PARALLEL_VERIFY_FROM", 0)
    monkeypatch.setattr(log, "ALIGN_LEVEL", 2)  # three parts of 30 entries: [0, 8), [8, 20), [20, 30)
    fill_log(services)
    with services.uow() as uow:
        assert services.audit.verify(uow.session, workers=3).ok
    with services.engine.begin() as conn:
        tampering.apply(conn)
    with services.uow() as uow:
        split = services.audit.verify(uow.session, workers=3)
        single = services.audit.verify(uow.session, workers=1)
    assert not split.ok and (split.first_bad, split.problem) == (single.first_bad, single.problem)
    assert split.first_bad == tampering.first_bad


def test_a_corrupted_tree_node_is_found_by_the_thorough_verify_and_fails_proofs(services: Services) -> None:
    fill_log(services)
    with services.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 1")
    with services.uow() as uow:
        routine = services.audit.verify(uow.session)
        thorough = services.audit.verify(uow.session, nodes=True)
        head = verifier.open_checkpoint(services.audit.latest_checkpoint(uow.session), services.audit.keys.verifier_key)
        leaf, proof = services.audit.inclusion_proof(uow.session, 0, SIZE)
    # The entries and checkpoints are whole; the proof cache is not, and the auditor's check says so.
    assert routine.ok
    assert not thorough.ok and "stored tree node (2, 1)" in (thorough.problem or "")
    with pytest.raises(verifier.ProofError):
        verifier.verify_inclusion(0, SIZE, leaf, proof, head.root_hash)
