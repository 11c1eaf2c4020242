from __future__ import annotations

from typing import Any

from flask import request

from referral_service.api import (
    bp,
    current_actor,
    json_body,
    load,
    optional_json_body,
    query_choice,
    query_int,
    requires,
    services,
)
from referral_service.api.openapi import PAGE, choice, operation
from referral_service.domain.access import Action
from referral_service.domain.commands import ReopenReferral, WithdrawConsent, WithdrawReferral
from referral_service.domain.errors import ValidationFailed
from referral_service.domain.model import ReferralStatus
from referral_service.services import referrals
from schemas import (
    ConsentWithdrawnSchema,
    ReferralInputSchema,
    ReferralPageSchema,
    ReferralSchema,
    ReferralStateSchema,
    ReopenSchema,
    SubmittedSchema,
    WithdrawSchema,
)

IDEMPOTENCY_KEY_MAX = 200
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
    "description": "a retry with the same key and body gets the first answer, and nothing is submitted twice",
}
# One instance for every request: building a schema (and its nested ones) costs more than loading a body,
# and loading keeps no state on the instance.
_REFERRAL_INPUT = ReferralInputSchema()
_STAFF_ONLY = {403: "only the referral's caseworker or a supervisor may do this"}


@bp.post("/referrals")
@operation(
    "Submit a referral",
    body=ReferralInputSchema,
    response=SubmittedSchema,
    status=201,
    parameters=(IDEMPOTENCY_KEY,),
    errors={
        403: "only caseworkers and supervisors submit referrals",
        409: "this Idempotency-Key was already used with a different body",
    },
)
@requires(Action.SUBMIT_REFERRAL)
def submit_referral() -> Any:
    actor = current_actor()
    data = json_body()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX):
        raise ValidationFailed("Idempotency-Key must be 1-200 characters", {"Idempotency-Key": ["bad length"]})
    mac = referrals.request_mac(services(), data) if key else None
    cmd = load(_REFERRAL_INPUT, data)
    outcome = referrals.submit_referral(services(), cmd, actor, idempotency_key=key, mac=mac)
    return outcome.body  # a replay answers as the first request did


@bp.get("/referrals/<referral_id>")
@operation(
    "One referral, as this caller may see it",
    response=ReferralSchema,
    description="A partner sees it only while it holds an offered or accepted assignment of it and consent "
    "stands, and only the subject's fields that the consent scopes release.",
    errors={403: "you may not see this referral"},
)
@requires(Action.READ_REFERRAL)
def get_referral(referral_id: str) -> Any:
    return referrals.get_referral(services(), referral_id, current_actor())


@bp.get("/referrals")
@operation(
    "List referrals (a caseworker's own, or all for supervisors), newest first",
    response=ReferralPageSchema,
    parameters=(choice("status", ReferralStatus, "only referrals in this status"), *PAGE),
    errors={403: "only caseworkers and supervisors list referrals"},
)
@requires(Action.LIST_REFERRALS)
def list_referrals() -> Any:
    actor = current_actor()
    return referrals.list_referrals(
        services(),
        actor,
        status=query_choice("status", ReferralStatus),
        limit=query_int("limit"),
        cursor=request.args.get("cursor"),
    )


@bp.post("/referrals/<referral_id>/consent/withdraw")
@operation(
    "Withdraw consent: open offers are pulled back, partners lose access",
    body=WithdrawSchema,
    body_required=False,
    response=ConsentWithdrawnSchema,
    errors={**_STAFF_ONLY, 409: "consent was already withdrawn"},
)
@requires(Action.WITHDRAW_CONSENT)
def withdraw_consent(referral_id: str) -> Any:
    actor = current_actor()
    data = load(WithdrawSchema(), optional_json_body())
    return referrals.withdraw_consent(services(), WithdrawConsent(referral_id, data.get("note")), actor)


@bp.post("/referrals/<referral_id>/withdraw")
@operation(
    "Withdraw the referral: open offers are pulled back, nothing more is routed",
    body=WithdrawSchema,
    body_required=False,
    response=ReferralStateSchema,
    errors={**_STAFF_ONLY, 409: "the referral is already withdrawn or closed"},
)
@requires(Action.WITHDRAW_REFERRAL)
def withdraw_referral(referral_id: str) -> Any:
    actor = current_actor()
    data = load(WithdrawSchema(), optional_json_body())
    return referrals.withdraw_referral(services(), WithdrawReferral(referral_id, data.get("note")), actor)


@bp.post("/referrals/<referral_id>/reopen")
@operation(
    "Re-open a withdrawn or unroutable referral (with a note why); it is routed again",
    body=ReopenSchema,
    response=ReferralStateSchema,
    errors={
        **_STAFF_ONLY,
        409: "the referral is not withdrawn or unroutable, or its consent was withdrawn or never given",
    },
)
@requires(Action.REOPEN_REFERRAL)
def reopen_referral(referral_id: str) -> Any:
    actor = current_actor()
    data = load(ReopenSchema(), json_body())
    return referrals.reopen_referral(services(), ReopenReferral(referral_id, data["note"]), actor)
