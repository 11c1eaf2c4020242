"""Audit entries: the canonical bytes, ids, and how entries ride along with a unit of work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from referral_service.audit.log import AuditFilter, format_at, row_leaf, uuid7
from referral_service.audit.verifier import ENTRY_FORMAT, entry_bytes, leaf_hash
from referral_service.bootstrap import Services
from referral_service.db.models import AuditEntry
from referral_service.db.session import UncommittedRecord
from referral_service.domain.access import Action
from referral_service.domain.errors import Forbidden
from referral_service.domain.model import Actor, Role
from referral_service.services.authorization import authorize

FIELDS = dict(
    entry_id="019ad6a4-0000-7000-8000-000000000001",
    at="2026-12-01T11:38:48.575989Z",
    actor_bi=b"A" * 16,
    action_bi=b"B" * 16,
    referral_bi=None,
    subject_bi=b"S" * 16,
    record_ct=b"record",
    details_key="subject",
    details_ct=b"details",
    commitment=b"C" * 32,
)


def test_canonical_bytes_are_the_documented_length_prefixed_layout() -> None:
    raw = entry_bytes(**FIELDS)  # type: ignore[arg-type]
    assert raw.startswith(len(ENTRY_FORMAT).to_bytes(4, "big") + ENTRY_FORMAT)
    # An absent blind index is an empty part, not a missing one: every field keeps its place.
    assert (0).to_bytes(4, "big") + (16).to_bytes(4, "big") + b"S" * 16 in raw
    assert raw.endswith((32).to_bytes(4, "big") + b"C" * 32)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_changes_the_leaf(name: str) -> None:
    changed = dict(FIELDS)
    value = changed[name]
    changed[name] = (value + "x") if isinstance(value, str) else (value or b"") + b"x"
    assert leaf_hash(entry_bytes(**changed)) != leaf_hash(entry_bytes(**FIELDS))  # type: ignore[arg-type]


def test_moving_bytes_between_neighbouring_fields_changes_the_leaf() -> None:
    a = dict(FIELDS, record_ct=b"recordX", details_key="subject", details_ct=b"details")
    b = dict(FIELDS, record_ct=b"record", details_key="Xsubject", details_ct=b"details")
    assert entry_bytes(**a) != entry_bytes(**b)  # type: ignore[arg-type]


def test_uuid7_carries_its_version_and_variant_and_sorts_by_time() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    ids = [uuid7(t0 + timedelta(milliseconds=i)) for i in range(50)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)


def test_timestamps_always_carry_microseconds_in_utc() -> None:
    assert format_at(datetime(2026, 12, 1, 16, 0, tzinfo=UTC)) == "2026-12-01T16:00:00.000000Z"


def _count(services: Services) -> int:
    with services.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_a_refusal_is_kept_although_its_unit_of_work_rolls_back(services: Services) -> None:
    partner = Actor("p-1", Role.PARTNER, "org-1")
    with pytest.raises(Forbidden), services.uow():
        authorize(services, partner, Action.LIST_REFERRALS)
    with services.uow() as uow:
        [row] = services.audit.query(uow.session, AuditFilter(actor_id="p-1"), limit=5)
        entry = services.audit.open_entry(uow.session, row)
        assert entry.leaf_hash == row_leaf(row)
    assert entry.record is not None
    assert (entry.record["action"], entry.record["outcome"], entry.record["partner_id"]) == (
        "referral.list",
        "denied",
        "org-1",
    )


def test_an_allowed_entry_goes_with_its_rolled_back_action(services: Services) -> None:
    with pytest.raises(RuntimeError, match="boom"), services.uow():
        authorize(services, Actor("s-1", Role.SUPERVISOR), Action.LIST_REFERRALS)
        raise RuntimeError("boom")
    assert _count(services) == 0


def test_a_recorded_read_that_is_never_committed_is_a_loud_error(services: Services) -> None:
    with pytest.raises(UncommittedRecord), services.uow():
        authorize(services, Actor("s-1", Role.SUPERVISOR), Action.LIST_REFERRALS)
    assert _count(services) == 0


def test_outside_a_unit_of_work_an_entry_gets_a_transaction_of_its_own(services: Services) -> None:
    services.access.record(actor=None, action="records.check", referral_id=None)
    assert _count(services) == 1
