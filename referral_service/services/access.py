"""Who saw or changed what: every reveal of personal data and every change reports here.

`AccessRecorder` is the seam the tamper-evident audit log plugs into; until then the record
goes to the structured log, identifiers only. `details` carries identifiers and fixed codes (e.g. which
account a refused sign-in was for, and why), never typed text such as a name or a password.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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
        details: Mapping[str, str] | None = None,
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
        details: Mapping[str, str] | None = None,
    ) -> None:
        log.info(
            "access action=%s outcome=%s actor=%s role=%s referral=%s subject=%s fields=%s details=%s",
            action,
            outcome,
            actor.user_id if actor else "system",
            actor.role.value if actor else "system",
            referral_id,
            subject_id,
            ",".join(fields),
            ",".join(f"{k}:{v}" for k, v in sorted((details or {}).items())),
        )
