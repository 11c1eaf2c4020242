"""Key maintenance as services (`services.keys`): rotation and re-indexing run whole in the service,
report progress per committed batch, and carry on where an interrupted run stopped."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from referral_service.bootstrap import Services
from referral_service.crypto.keyring import FileKeyring
from referral_service.db.models import BlindIndex, CryptoMeta, Subject, SubjectKey
from referral_service.domain.errors import Conflict
from referral_service.domain.model import SubjectInput
from referral_service.services import keys


class Interrupted(Exception):
    """Stands for Ctrl-C or a crash of the process running the workflow."""


def _subjects(services: Services, n: int) -> dict[str, str]:
    """n subjects with a CNIC each; {subject id: CNIC}."""
    made = {}
    with services.uow() as uow:
        for i in range(n):
            cnic = f"35202-{i:07d}-1"
            subject = services.vault.create_subject(
                uow.session,
                SubjectInput(full_name=f"Person {i}", province="Punjab", district="Lahore", cnic=cnic),
                services.clock.now(),
            )
            services.matcher.index_subject(uow.session, subject, cnic, None)
            made[subject.id] = cnic
        uow.commit()
    return made


def _interrupt_after(batches: int, seen: list[int]) -> Any:
    def progress(done: int) -> None:
        seen.append(done)
        if len(seen) == batches:
            raise Interrupted

    return progress


def _names(services: Services) -> dict[str, str | None]:
    with services.uow() as uow:
        names = {
            s.id: services.vault.reveal_subject(uow.session, s, ["full_name"], actor=None, referral_id=None)[
                "full_name"
            ]
            for s in uow.session.scalars(select(Subject))
        }
        uow.commit()  # the reveals are audited
        return names


class FailingWraps:
    """The real keyring, whose `wrap_dek` fails from the `fail_at`-th call on (a crash inside a batch)."""

    def __init__(self, real: Any, fail_at: int) -> None:
        self.real, self.calls, self.fail_at = real, 0, fail_at

    def wrap_dek(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise Interrupted
        return self.real.wrap_dek(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_rotation_interrupted_between_batches_resumes_and_moves_every_key_once(services: Services) -> None:
    people = _subjects(services, 7)
    old = services.keys.active_kek_id()
    new = keys.start_rotation(services)
    assert new != old and services.keys.active_kek_id() == new
    assert keys.keys_to_rewrap(services) == 7

    seen: list[int] = []
    with pytest.raises(Interrupted):
        keys.rotate(services, batch_size=3, progress=_interrupt_after(1, seen))
    assert seen == [3]
    assert keys.kek_usage(services) == {old: 4, new: 3}  # the first batch was committed

    resumed: list[int] = []
    result = keys.rotate(services, batch_size=3, progress=resumed.append)
    assert resumed == [3, 1] and result.damaged == []
    assert result.usage == keys.kek_usage(services) == {new: 7}
    assert _names(services) == {sid: f"Person {i}" for i, sid in enumerate(people)}


def test_rotation_crashing_inside_a_batch_loses_only_that_batch_and_resumes(services: Services) -> None:
    _subjects(services, 5)
    old, new = services.keys.active_kek_id(), keys.start_rotation(services)
    real = services.keys
    services.keys = FailingWraps(real, fail_at=3)  # type: ignore[assignment]  # the 1st key of batch 2
    with pytest.raises(Interrupted):
        keys.rotate(services, batch_size=2)
    services.keys = real
    assert keys.kek_usage(services) == {old: 3, new: 2}  # batch 2 rolled back whole, no key half-moved

    result = keys.rotate(services, batch_size=2)
    assert result.usage == {new: 5}
    assert all(name is not None for name in _names(services).values())


def test_retire_refuses_a_kek_that_still_wraps_keys_and_changes_nothing(services: Services) -> None:
    _subjects(services, 2)
    old = services.keys.active_kek_id()
    keys.start_rotation(services)
    with pytest.raises(Conflict, match=r"still wraps 2 data key\(s\); run 'referral-service keys rotate --resume'"):
        keys.retire(services, old)
    assert old in FileKeyring(services.settings.keyring_path).kek_ids()

    keys.rotate(services)
    keys.retire(services, old)
    assert old not in FileKeyring(services.settings.keyring_path).kek_ids()
    with services.uow() as uow:
        assert uow.session.get(CryptoMeta, keys.canary_name(old)) is None
    keys.verify_keys(services)  # the retired keyring still proves itself at start-up


def test_reindex_interrupted_after_a_batch_resumes_from_its_cursor_and_keeps_finding_matches(
    services: Services,
) -> None:
    people = _subjects(services, 7)
    plan = keys.begin_reindex(services)
    assert (plan.old, plan.new, plan.remaining) == (1, 2, 7)

    seen: list[int] = []
    with pytest.raises(Interrupted):
        keys.reindex(services, batch_size=3, progress=_interrupt_after(1, seen))
    assert seen == [3]
    assert keys.begin_reindex(services) == (1, 2, 4)  # resumes: the cursor was committed with the batch
    with services.uow() as uow:  # lookups ask both versions meanwhile
        for sid, cnic in people.items():
            assert [m.subject.id for m in services.matcher.find_matching_subjects(uow.session, cnic, None)] == [sid]

    resumed: list[int] = []
    result = keys.reindex(services, batch_size=3, progress=resumed.append)
    assert resumed == [3, 1]
    assert (result.old, result.new, result.damaged) == (1, 2, [])
    assert result.dropped == 7  # the old version's rows
    assert keys.status(services)["blind_index_versions"] == [2]
    with services.uow() as uow:
        assert set(uow.session.scalars(select(BlindIndex.version))) == {2}
        for sid, cnic in people.items():
            undashed = cnic.replace("-", "")
            assert [m.subject.id for m in services.matcher.find_matching_subjects(uow.session, undashed, None)] == [sid]


def test_status_names_the_active_kek_its_data_keys_and_the_index_versions(services: Services) -> None:
    _subjects(services, 3)
    status = keys.status(services)
    active = services.keys.active_kek_id()
    assert status == {
        "active_kek": active,
        "keks": services.keys.kek_ids(),
        "data_keys_per_kek": {active: 3},
        "blind_index_versions": [1],
    }
    with services.uow() as uow:
        assert len(uow.session.scalars(select(SubjectKey)).all()) == 3
