"""Possible duplicate people, for supervisors: the queue, and the decision on each pair."""

from __future__ import annotations

from typing import Any

from flask import request

from referral_service.api import (
    bp,
    current_actor,
    load,
    optional_json_body,
    query_choice,
    query_int,
    requires,
    services,
)
from referral_service.api.openapi import PAGE, choice, operation
from referral_service.domain.access import Action
from referral_service.domain.commands import ConfirmDuplicate, DismissDuplicate
from referral_service.domain.duplicates import DuplicateStatus
from referral_service.services import duplicates
from schemas.duplicates import DuplicateDecisionResultSchema, DuplicateDecisionSchema, DuplicatePageSchema

_SUPERVISORS = {403: "possible duplicates are for supervisors"}
_DECIDED = {**_SUPERVISORS, 409: "this possible duplicate was already confirmed or dismissed"}


@bp.get("/duplicates")
@operation(
    "Possible duplicate people (a CNIC or phone matching an earlier subject), oldest first (supervisors)",
    response=DuplicatePageSchema,
    errors=_SUPERVISORS,
    parameters=(choice("status", DuplicateStatus, "which questions", default=DuplicateStatus.PENDING), *PAGE),
)
@requires(Action.LIST_DUPLICATES)
def list_duplicates() -> Any:
    actor = current_actor()
    return duplicates.list_duplicates(
        services(),
        actor,
        status=query_choice("status", DuplicateStatus),
        limit=query_int("limit"),
        cursor=request.args.get("cursor"),
    )


@bp.post("/duplicates/<duplicate_id>/confirm")
@operation(
    "Confirm: link both people as one (supervisors); no data moves between referrals",
    body=DuplicateDecisionSchema,
    body_required=False,
    response=DuplicateDecisionResultSchema,
    errors=_DECIDED,
)
@requires(Action.CONFIRM_DUPLICATE)
def confirm_duplicate(duplicate_id: str) -> Any:
    actor = current_actor()
    load(DuplicateDecisionSchema(), optional_json_body())
    return duplicates.confirm(services(), ConfirmDuplicate(duplicate_id), actor)


@bp.post("/duplicates/<duplicate_id>/dismiss")
@operation(
    "Dismiss: keep the two people apart (supervisors)",
    body=DuplicateDecisionSchema,
    body_required=False,
    response=DuplicateDecisionResultSchema,
    errors=_DECIDED,
)
@requires(Action.DISMISS_DUPLICATE)
def dismiss_duplicate(duplicate_id: str) -> Any:
    actor = current_actor()
    load(DuplicateDecisionSchema(), optional_json_body())
    return duplicates.dismiss(services(), DismissDuplicate(duplicate_id), actor)
