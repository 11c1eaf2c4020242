"""Who saw or changed what: every reveal of personal data and every change reports here.

`AccessRecorder` is the seam the tamper-evident audit log plugs into; until then the record
goes to the structured log, identifiers only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from referral_service.domain.model import Actor

log = logging.getLogger("referral_service.access")


class AccessRecorder(Protocol):
    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "allowed",
    ) -> None: ...


class LogAccessRecorder:
    def record(
        self,
        *,
        actor: Actor | None,
        action: str,
        referral_id: str | None,
        subject_id: str | None = None,
        fields: Sequence[str] = (),
        outcome: str = "allowed",
    ) -> None:
        log.info(
            "access action=%s outcome=%s actor=%s role=%s referral=%s subject=%s fields=%s",
            action,
            outcome,
            actor.user_id if actor else "system",
            actor.role.value if actor else "system",
            referral_id,
            subject_id,
            ",".join(fields),
        )
