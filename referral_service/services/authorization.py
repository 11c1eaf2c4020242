"""Every access decision of a service call passes here: the policy decides, one call records it.

The rules are in `domain/access.py`. This module only asks them and reports each decision, allowed
or denied, to the `AccessRecorder` (`_record`, the one place it is called for decisions), so the
audit log can keep every decision in the transaction of the call it belongs to. An allowed action
whose transaction then fails with a conflict (409: the state machine refused the move, someone
changed the case meanwhile) loses that record with the rollback, so the attempt is recorded again
after it, with the outcome `conflict` and the error's code: auditors see attempts that failed, as
they see refusals. Reveals of personal data are reported by the vault itself (`Vault.reveal_*`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from referral_service.db.session import current_unit_of_work
from referral_service.domain import access
from referral_service.domain.access import Action, Case, Consent, Decision, Outcome, Relation
from referral_service.domain.errors import Conflict, Forbidden
from referral_service.domain.model import Actor

if TYPE_CHECKING:
    from referral_service.services.ports import Services


def decide(
    services: Services,
    actor: Actor,
    action: Action,
    case: Case | None = None,
    *,
    referral_id: str | None = None,
    subject_id: str | None = None,
    details: Mapping[str, str] | None = None,
) -> Decision:
    """The policy's decision on `action`, recorded; the caller acts on `decision.allowed`.
    `details`: identifiers and codes that say what was asked (an auditor's filters, say)."""
    decision = access.decide(actor, action, case)
    _record(services, actor, decision, referral_id, subject_id, details)
    uow = current_unit_of_work()
    if decision.allowed and uow is not None:

        def conflicted(error: BaseException) -> None:
            if isinstance(error, Conflict):
                # Only the error's code: its message may describe the case.
                _record(
                    services,
                    actor,
                    decision,
                    referral_id,
                    subject_id,
                    {**(details or {}), "conflict": error.code},
                    outcome=Outcome.CONFLICT,
                )

        uow.on_failure(conflicted)
    return decision


def authorize(
    services: Services,
    actor: Actor,
    action: Action,
    case: Case | None = None,
    *,
    referral_id: str | None = None,
    subject_id: str | None = None,
    details: Mapping[str, str] | None = None,
) -> Decision:
    """As `decide`, and Forbidden (403) when it is a refusal."""
    decision = decide(services, actor, action, case, referral_id=referral_id, subject_id=subject_id, details=details)
    if not decision.allowed:
        raise Forbidden(decision.refusal)
    return decision


#: How much of an identifier the caller typed goes on a refusal's record.
MAX_ASKED_ID = 100


def screen(services: Services, actor: Actor, action: Action, *, asked: Mapping[str, object] | None = None) -> None:
    """Role before case and body: refuse (recorded) a role that no case could allow the action, before
    anything is loaded or validated, so the refused caller learns nothing about either. A role that
    passes is not recorded here: the decision on the case itself follows, and is. `asked` holds the
    identifiers the request named (a view's path arguments: referral, assignment, delivery ids): the
    refusal's record names them, cut short, so an auditor asking who tried to reach a referral finds it."""
    if not access.role_may(actor.role, action):
        details = {k: str(v)[:MAX_ASKED_ID] for k, v in (asked or {}).items()}
        referral_id = details.pop("referral_id", None)
        decision = Decision(action, False, Relation.NO_CASE, Consent.NO_CASE)
        _record(services, actor, decision, referral_id, None, details or None)
        raise Forbidden(decision.refusal)


def _record(
    services: Services,
    actor: Actor,
    decision: Decision,
    referral_id: str | None,
    subject_id: str | None,
    details: Mapping[str, str] | None,
    *,
    outcome: Outcome | None = None,
) -> None:
    services.access.record(
        actor=actor,
        action=decision.action.value,
        referral_id=referral_id,
        subject_id=subject_id,
        outcome=(outcome or (Outcome.ALLOWED if decision.allowed else Outcome.DENIED)).value,
        details=details,
    )
