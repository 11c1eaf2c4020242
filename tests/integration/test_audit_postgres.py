"""The audit log on PostgreSQL: tampering detected, racing integrators, late commits, erasure."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from referral_service.audit import merkle, verifier
from referral_service.audit.log import AuditFilter
from referral_service.bootstrap import Services
from referral_service.db.models import AuditCheckpoint, AuditEntry
from referral_service.domain.model import Actor, Role
from referral_service.services.audit import integrate_all, integrate_once
from referral_service.services.referrals import get_referral
from referral_service.services.subjects import erase_subject
from tests.audit_tamper import SIZE, TAMPERINGS, Tampering, fill_log
from tests.integration.harness import World


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=lambda t: t.name)
def test_tampering_in_sql_on_postgresql_is_detected_and_the_first_bad_entry_named(
    pg_services: Services, tampering: Tampering
) -> None:
    fill_log(pg_services)
    with pg_services.uow() as uow:
        assert pg_services.audit.verify(uow.session).ok
    with pg_services.engine.begin() as conn:
        tampering.apply(conn)
    with pg_services.uow() as uow:
        report = pg_services.audit.verify(uow.session)
    assert not report.ok
    assert report.first_bad == tampering.first_bad, report.line()
    assert tampering.says in (report.problem or ""), report.line()


def _write(services: Services, actor: Actor, count: int, errors: list[BaseException]) -> None:
    try:
        for n in range(count):
            with services.uow() as uow:
                services.access.record(actor=actor, action="referral.read", referral_id=f"ref-{n}")
                uow.commit()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _integrate_until(services: Services, stop: threading.Event, wins: list[int], errors: list[BaseException]) -> None:
    try:
        while not stop.is_set():
            done = integrate_once(services, batch=37)
            if done:
                wins.append(done)
            else:
                stop.wait(0.01)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)


def test_racing_integrators_each_step_has_one_winner_and_every_checkpoint_is_consistent(
    pg_services: Services,
) -> None:
    """Writers and three integrators at once, each on its own connections: every entry gets exactly one
    index, the indexes are 0..n-1, and every signed checkpoint is a prefix of the final log."""
    stop = threading.Event()
    errors: list[BaseException] = []
    wins: list[list[int]] = [[], [], []]
    writers = [
        threading.Thread(target=_write, args=(pg_services, Actor(f"w-{i}", Role.SUPERVISOR), 150, errors))
        for i in range(3)
    ]
    integrators = [threading.Thread(target=_integrate_until, args=(pg_services, stop, w, errors)) for w in wins]
    for t in [*writers, *integrators]:
        t.start()
    for t in writers:
        t.join(120)
    integrate_all(pg_services)
    stop.set()
    for t in integrators:
        t.join(60)
    assert errors == []
    assert sum(len(w) for w in wins) > 3 and sum(map(sum, wins)) <= 450

    with pg_services.uow() as uow:
        session = uow.session
        indexes = sorted(session.scalars(select(AuditEntry.idx)).all())  # type: ignore[type-var]
        assert indexes == list(range(450))
        report = pg_services.audit.verify(session)
        assert report.ok and report.entries == 450, report.line()
        key = pg_services.audit.keys.verifier_key
        checkpoints = [
            verifier.open_checkpoint(note, key)
            for note in session.scalars(select(AuditCheckpoint.note).order_by(AuditCheckpoint.size))
        ]
        final = checkpoints[-1]
        assert final.size == 450
        sizes = [c.size for c in checkpoints]
        assert sizes == sorted(set(sizes))  # one checkpoint per size: never two for one tree
        for older in checkpoints[:-1]:
            proof = pg_services.audit.consistency_proof(session, older.size, final.size)
            verifier.verify_extends(older, final, proof)


def test_an_entry_committed_late_is_sequenced_after_those_committed_before_it(pg_services: Services) -> None:
    """Ids are given at write time, indexes at integration: a transaction that began first and commits
    last gets its entry sequenced when it commits, never lost and never slotted into the past."""
    early = pg_services.uow()
    early.__enter__()
    try:
        pg_services.access.record(actor=Actor("slow", Role.SUPERVISOR), action="referral.read", referral_id="r-1")
        early.session.flush()  # written (with the earlier id), not committed
        with pg_services.uow() as uow:
            pg_services.access.record(actor=Actor("fast", Role.SUPERVISOR), action="referral.read", referral_id="r-2")
            uow.commit()
        assert integrate_all(pg_services) == 1
        early.commit()
    finally:
        early.__exit__(None, None, None)
    assert integrate_all(pg_services) == 1
    with pg_services.uow() as uow:
        rows = pg_services.audit.query(uow.session, AuditFilter(), limit=10)
        opened = {pg_services.audit.open_entry(uow.session, r).record["actor_id"]: r for r in rows}  # type: ignore[index]
        assert opened["slow"].id < opened["fast"].id and opened["slow"].idx == 1 and opened["fast"].idx == 0
        assert pg_services.audit.verify(uow.session).ok


def test_on_postgresql_erasure_leaves_the_entries_verifiable_with_their_details_erased(world: World) -> None:
    services = world.services
    caseworker = world.caseworker()
    referral_id = world.submit(caseworker)
    subject_id = get_referral(services, referral_id, caseworker)["subject_id"]
    erase_subject(services, subject_id)
    integrate_all(services)
    with services.uow() as uow:
        rows = services.audit.query(uow.session, AuditFilter(subject_id=subject_id), limit=100)
        opened = [services.audit.open_entry(uow.session, r) for r in rows]
        report = services.audit.verify(uow.session)
        sealed_under_subject = uow.session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.details_key == "subject")
        )
    assert report.ok, report.line()
    assert sealed_under_subject and sealed_under_subject > 0
    states = {e.details_state for e in opened if e.record and e.record["action"] != "subject.erase"}
    assert states == {"erased"}
    assert any(e.record and e.record["action"] == "subject.erase" and e.details_state == "ok" for e in opened)


def test_the_integrator_extends_the_tree_without_recomputing_it(pg_services: Services) -> None:
    fill_log(pg_services)
    with pg_services.engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM audit_nodes")).scalar_one()
        leaves = conn.execute(text("SELECT hash FROM audit_nodes WHERE level = 0 ORDER BY idx")).scalars().all()
    tree = merkle.MerkleTree()
    tree.append([bytes(h) for h in leaves])
    assert isinstance(tree.store, merkle.MemoryNodeStore)
    assert stored == tree.store.node_count() and len(leaves) == SIZE


@pytest.mark.parametrize("tampering", [TAMPERINGS[0], TAMPERINGS[4]], ids=lambda t: t.name)
def test_on_postgresql_a_verify_split_over_processes_finds_what_one_process_finds(
    pg_services: Services, tampering: Tampering, monkeypatch: pytest.MonkeyPatch
) -> None:
    from referral_service.audit import log

    monkeypatch.setattr(log, "PARALLEL_VERIFY_FROM", 0)
    monkeypatch.setattr(log, "ALIGN_LEVEL", 2)
    fill_log(pg_services)
    with pg_services.uow() as uow:
        whole = pg_services.audit.verify(uow.session, workers=3)
        assert whole.ok and whole.entries == SIZE, whole.line()
    with pg_services.engine.begin() as conn:
        tampering.apply(conn)
    with pg_services.uow() as uow:
        split = pg_services.audit.verify(uow.session, workers=3)
        single = pg_services.audit.verify(uow.session, workers=1)
    assert not split.ok and (split.first_bad, split.problem) == (single.first_bad, single.problem)
    assert split.first_bad == tampering.first_bad


def test_postgresql_builds_each_entrys_canonical_bytes_exactly_as_the_verifier_defines_them(world: World) -> None:
    from tests.audit_tamper import database_bytes_match_python

    caseworker = world.caseworker()
    referral_id = world.submit(caseworker)
    get_referral(world.services, referral_id, caseworker)
    integrate_all(world.services)
    assert database_bytes_match_python(world.services) > 2


def test_verify_while_the_log_grows_reads_one_snapshot(pg_services: Services) -> None:
    """`audit verify` on a live log (found by bench/soak.py: "the tree holds 1 leaves with no entry"): its
    statements must all read one snapshot, not each the latest commit, or the entries counted first and the
    leaves counted later disagree while the integrator appends."""
    from referral_service.db.session import read_only_session
    from referral_service.services.audit import verify

    actor = Actor("grower", Role.SUPERVISOR)
    errors: list[BaseException] = []
    _write(pg_services, actor, 20, errors)
    integrate_all(pg_services)
    with read_only_session(pg_services.engine) as session:
        before = session.scalar(select(func.count()).select_from(AuditEntry))
        _write(pg_services, actor, 5, errors)
        integrate_all(pg_services)
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == before

    stop = threading.Event()
    wins: list[int] = []
    writer = threading.Thread(target=_write, args=(pg_services, actor, 400, errors))
    integrator = threading.Thread(target=_integrate_until, args=(pg_services, stop, wins, errors))
    writer.start()
    integrator.start()
    reports = []
    while writer.is_alive():
        reports.append(verify(pg_services))
    stop.set()
    integrator.join(60)
    assert errors == []
    assert len(reports) > 3
    assert [r.line() for r in reports if not r.ok] == []
