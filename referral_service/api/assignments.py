from __future__ import annotations

from typing import Any

from flask import request

from referral_service.api import bp, current_actor, json_body, load, ok, query_choice, query_int, services
from referral_service.domain.access import Action
from referral_service.domain.commands import AcceptAssignment, CloseAssignment, DeclineAssignment, RecordFollowUp
from referral_service.domain.model import AssignmentStatus
from referral_service.services import assignments, deadlines, partners
from referral_service.services.authorization import screen
from schemas import CloseSchema, DeclineSchema, FollowUpSchema, PartnerSchema


@bp.get("/assignments")
def inbox() -> Any:
    actor = current_actor()
    return ok(assignments.inbox(services(), actor, status=query_choice("status", AssignmentStatus),
                                limit=query_int("limit"), cursor=request.args.get("cursor")))


@bp.post("/assignments/<assignment_id>/accept")
def accept(assignment_id: str) -> Any:
    return ok(assignments.accept(services(), AcceptAssignment(assignment_id), current_actor()))


@bp.post("/assignments/<assignment_id>/decline")
def decline(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(DeclineSchema(), json_body())
    cmd = DeclineAssignment(assignment_id, data["reason"], data.get("note"))
    return ok(assignments.decline(services(), cmd, actor))


@bp.post("/assignments/<assignment_id>/followups")
def followup(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(FollowUpSchema(), json_body())
    cmd = RecordFollowUp(assignment_id, data["outcome"], data.get("note"))
    return ok(assignments.record_followup(services(), cmd, actor), 201)


@bp.post("/assignments/<assignment_id>/close")
def close(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(CloseSchema(), json_body())
    cmd = CloseAssignment(assignment_id, data["outcome"], data.get("note"), data["services_delivered"])
    return ok(assignments.close(services(), cmd, actor))


@bp.get("/deadlines/overdue")
def overdue() -> Any:
    actor = current_actor()
    return ok(deadlines.overdue(services(), actor, limit=query_int("limit"), cursor=request.args.get("cursor")))


@bp.get("/partners")
def list_partners() -> Any:
    actor = current_actor()
    return ok(partners.list_partners(services(), actor, limit=query_int("limit"), cursor=request.args.get("cursor")))


@bp.get("/partners/<partner_id>")
def get_partner(partner_id: str) -> Any:
    return ok(partners.get_partner(services(), partner_id, current_actor()))


@bp.post("/partners")
def upsert_partner() -> Any:
    actor = current_actor()
    screen(services(), actor, Action.WRITE_PARTNERS)  # role before body
    body = json_body()
    data = load(PartnerSchema(), body)
    return ok(partners.upsert_partners(services(), [data], actor)[0], 201)
