from __future__ import annotations

from typing import Any

from flask import request

from referral_service.api import (
    bp,
    current_actor,
    json_body,
    load,
    ok,
    optional_json_body,
    query_choice,
    query_int,
    services,
)
from referral_service.domain.access import Action
from referral_service.domain.commands import ReopenReferral, WithdrawConsent, WithdrawReferral
from referral_service.domain.errors import ValidationFailed
from referral_service.domain.model import ReferralStatus
from referral_service.services import referrals
from referral_service.services.authorization import screen
from schemas.referrals import ReferralInputSchema, ReopenSchema, WithdrawSchema

IDEMPOTENCY_KEY_MAX = 200


@bp.post("/referrals")
def submit_referral() -> Any:
    actor = current_actor()
    # Role before body: a caller who may not submit learns nothing about what a valid referral looks like.
    screen(services(), actor, Action.SUBMIT_REFERRAL)
    data = json_body()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX):
        raise ValidationFailed("Idempotency-Key must be 1-200 characters", {"Idempotency-Key": ["bad length"]})
    mac = referrals.request_mac(services(), data) if key else None
    cmd = load(ReferralInputSchema(), data)
    outcome = referrals.submit_referral(services(), cmd, actor, idempotency_key=key, mac=mac)
    return ok(outcome.body, 201)  # a replay answers as the first request did


@bp.get("/referrals/<referral_id>")
def get_referral(referral_id: str) -> Any:
    return ok(referrals.get_referral(services(), referral_id, current_actor()))


@bp.get("/referrals")
def list_referrals() -> Any:
    actor = current_actor()
    return ok(referrals.list_referrals(services(), actor, status=query_choice("status", ReferralStatus),
                                       limit=query_int("limit"), cursor=request.args.get("cursor")))


@bp.post("/referrals/<referral_id>/consent/withdraw")
def withdraw_consent(referral_id: str) -> Any:
    actor = current_actor()
    data = load(WithdrawSchema(), optional_json_body())
    return ok(referrals.withdraw_consent(services(), WithdrawConsent(referral_id, data.get("note")), actor))


@bp.post("/referrals/<referral_id>/withdraw")
def withdraw_referral(referral_id: str) -> Any:
    actor = current_actor()
    data = load(WithdrawSchema(), optional_json_body())
    return ok(referrals.withdraw_referral(services(), WithdrawReferral(referral_id, data.get("note")), actor))


@bp.post("/referrals/<referral_id>/reopen")
def reopen_referral(referral_id: str) -> Any:
    actor = current_actor()
    data = load(ReopenSchema(), json_body())
    return ok(referrals.reopen_referral(services(), ReopenReferral(referral_id, data["note"]), actor))
