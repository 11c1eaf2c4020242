from __future__ import annotations

from typing import Any

from flask import request

from referral_service.api import bp, current_actor, json_body, load, query_choice, query_int, requires, services
from referral_service.api.openapi import PAGE, choice, operation
from referral_service.domain.access import REFUSALS, Action
from referral_service.domain.commands import AcceptAssignment, CloseAssignment, DeclineAssignment, RecordFollowUp
from referral_service.domain.model import AssignmentStatus
from referral_service.services import assignments, deadlines, partners
from schemas import (
    AssignmentPageSchema,
    AssignmentSchema,
    CloseSchema,
    DeadlinePolicySchema,
    DeclineSchema,
    FollowUpRecordedSchema,
    FollowUpSchema,
    OverduePageSchema,
    PartnerPageSchema,
    PartnerSchema,
    PartnerViewSchema,
)

_ASSIGNED_PARTNER = {403: "only the assigned partner may do this"}
# A note is sealed under the person's data key: a key that does not open refuses it (damaged_record).
_DAMAGED = (
    "the person's data key does not open (damaged_record), or their data was erased and a note cannot be "
    "stored (subject_erased)"
)
_CONCURRENT = "someone else changed the assignment at the same time; reload it"


@bp.get("/assignments")
@operation(
    "Assignment inbox (a partner's own organisation, or all for supervisors), newest offer first",
    response=AssignmentPageSchema,
    parameters=(choice("status", AssignmentStatus, "only assignments in this status"), *PAGE),
    errors={403: "the assignment inbox is for partner staff and supervisors"},
)
@requires(Action.LIST_ASSIGNMENTS)
def inbox() -> Any:
    actor = current_actor()
    return assignments.inbox(
        services(),
        actor,
        status=query_choice("status", AssignmentStatus),
        limit=query_int("limit"),
        cursor=request.args.get("cursor"),
    )


@bp.post("/assignments/<assignment_id>/accept")
@operation(
    "Accept an offered case",
    response=AssignmentSchema,
    errors={**_ASSIGNED_PARTNER, 409: f"the assignment is not offered any more; or {_CONCURRENT}"},
)
@requires(Action.ACCEPT_ASSIGNMENT)
def accept(assignment_id: str) -> Any:
    return assignments.accept(services(), AcceptAssignment(assignment_id), current_actor())


@bp.post("/assignments/<assignment_id>/decline")
@operation(
    "Decline an offered or accepted case; it is routed onward",
    body=DeclineSchema,
    response=AssignmentSchema,
    errors={**_ASSIGNED_PARTNER, 409: f"the assignment is not open; or {_DAMAGED}; or {_CONCURRENT}"},
)
@requires(Action.DECLINE_ASSIGNMENT)
def decline(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(DeclineSchema(), json_body())
    cmd = DeclineAssignment(assignment_id, data["reason"], data.get("note"))
    return assignments.decline(services(), cmd, actor)


@bp.post("/assignments/<assignment_id>/followups")
@operation(
    "Record a follow-up: contact made, service started or delivered (free text in the sealed note)",
    body=FollowUpSchema,
    response=FollowUpRecordedSchema,
    status=201,
    errors={**_ASSIGNED_PARTNER, 409: f"the assignment is not accepted; or {_DAMAGED}; or {_CONCURRENT}"},
)
@requires(Action.RECORD_FOLLOWUP)
def followup(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(FollowUpSchema(), json_body())
    cmd = RecordFollowUp(assignment_id, data["outcome"], data.get("note"))
    return assignments.record_followup(services(), cmd, actor)


@bp.post("/assignments/<assignment_id>/close")
@operation(
    "Close an assignment with an outcome (the assigned partner or a supervisor)",
    body=CloseSchema,
    response=AssignmentSchema,
    errors={
        403: "only the assigned partner or a supervisor may do this",
        409: f"the assignment is not open; or {_DAMAGED}; or {_CONCURRENT}",
    },
)
@requires(Action.CLOSE_ASSIGNMENT)
def close(assignment_id: str) -> Any:
    actor = current_actor()
    data = load(CloseSchema(), json_body())
    cmd = CloseAssignment(assignment_id, data["outcome"], data.get("note"), data["services_delivered"])
    return assignments.close(services(), cmd, actor)


@bp.get("/deadlines/overdue")
@operation(
    "Every overdue deadline, riskiest then oldest first (supervisors)",
    response=OverduePageSchema,
    parameters=PAGE,
    errors={403: "overdue deadlines are for supervisors"},
)
@requires(Action.LIST_OVERDUE)
def overdue() -> Any:
    actor = current_actor()
    return deadlines.overdue(services(), actor, limit=query_int("limit"), cursor=request.args.get("cursor"))


@bp.get("/deadlines/policy")
@operation(
    "The deadline policy in force per risk level: built-in values and REFERRAL_DEADLINE_POLICY's overrides",
    response=DeadlinePolicySchema,
    errors={403: "overdue deadlines are for supervisors"},
)
@requires(Action.LIST_OVERDUE)
def deadline_policy() -> Any:
    return deadlines.effective_policy(services(), current_actor())


# The policy keeps analysts to aggregate statistics: the directory answers them 403, in the policy's words.
PARTNERS_NOT_FOR_ANALYSTS = REFUSALS[Action.READ_PARTNERS]


@bp.get("/partners")
@operation(
    "The partner directory, by id (every signed-in role but analysts)",
    response=PartnerPageSchema,
    parameters=PAGE,
    errors={403: PARTNERS_NOT_FOR_ANALYSTS},
)
@requires(Action.READ_PARTNERS)
def list_partners() -> Any:
    actor = current_actor()
    return partners.list_partners(services(), actor, limit=query_int("limit"), cursor=request.args.get("cursor"))


@bp.get("/partners/<partner_id>")
@operation(
    "One partner organisation (every signed-in role but analysts)",
    response=PartnerViewSchema,
    errors={403: PARTNERS_NOT_FOR_ANALYSTS},
)
@requires(Action.READ_PARTNERS)
def get_partner(partner_id: str) -> Any:
    return partners.get_partner(services(), partner_id, current_actor())


@bp.post("/partners")
@operation(
    "Create or update a partner by id (admins)",
    body=PartnerSchema,
    response=PartnerViewSchema,
    status=201,
    errors={403: "only admins change the partner directory"},
)
@requires(Action.WRITE_PARTNERS)
def upsert_partner() -> Any:
    actor = current_actor()
    body = json_body()
    data = load(PartnerSchema(), body)
    return partners.upsert_partners(services(), [data], actor)[0]
