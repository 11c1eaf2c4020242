"""Data-subject operations: crypto-shredding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from referral_service.db.models import Referral, Subject
from referral_service.domain import events
from referral_service.domain.errors import Conflict, NotFound

if TYPE_CHECKING:
    from referral_service.bootstrap import Services


def erase_subject(services: Services, subject_id: str) -> None:
    with services.uow() as uow:
        subject = uow.session.get(Subject, subject_id)
        if subject is None:
            raise NotFound("no such subject")
        if subject.erased_at is not None:
            raise Conflict("the subject was already erased")
        services.personal_data.erase(uow.session, subject, services.clock.now())
        first = uow.session.scalars(select(Referral.id).where(Referral.subject_id == subject_id).limit(1)).first()
        uow.emit(events.SubjectErased(referral_id=first, subject_id=subject_id))
        services.personal_data.access.record(actor=None, action="subject.erase", referral_id=first,
                                             subject_id=subject_id)
        uow.commit()
