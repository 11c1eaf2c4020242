"""Pages for people: thin views (read the form → validate with the API's schema → one service call)."""

from __future__ import annotations

import functools
import re
import secrets
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import LazyString, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from marshmallow import Schema

from referral_service.domain import access
from referral_service.domain.access import Action, Scope
from referral_service.domain.commands import (
    AcceptAssignment,
    CloseAssignment,
    ConfirmDuplicate,
    DeclineAssignment,
    DismissDuplicate,
    RecordFollowUp,
    ReopenReferral,
    WithdrawConsent,
    WithdrawReferral,
)
from referral_service.domain.duplicates import DuplicateStatus
from referral_service.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    PersonErased,
    RecordDamaged,
    Unauthenticated,
)
from referral_service.domain.geography import districts, provinces
from referral_service.domain.model import (
    CLOSE_OUTCOMES,
    CONSENT_METHODS,
    DECLINE_REASONS,
    FOLLOWUP_OUTCOMES,
    LANGUAGES,
    RISK_LEVELS,
    SERVICES,
    SEXES,
    SHARE_SCOPES,
    STAFF_SEX_PREFERENCES,
    UNKNOWN,
    Actor,
    AssignmentStatus,
    ReferralStatus,
)
from referral_service.domain.statistics import DIMENSIONS
from referral_service.ratelimit import retry_after_seconds
from referral_service.services import (
    assignments,
    audit,
    deadlines,
    duplicates,
    notifications,
    partners,
    referrals,
    reports,
    sessions,
    users,
)
from referral_service.services.authorization import screen
from referral_service.web import charts
from referral_service.web.forms import (
    TEXT_MAX,
    FormState,
    load,
    note_only_payload,
    note_payload,
    referral_payload,
    referral_values,
)
from referral_service.web.i18n import choices, label
from schemas import CloseSchema, DeclineSchema, FollowUpSchema, ReferralInputSchema
from schemas.audit import FILTER_NAMES, AuditFilterSchema, AuditVerifySchema, audit_csv, audit_filter
from schemas.referrals import ReopenSchema, WithdrawSchema

bp = Blueprint("web", __name__)
F = TypeVar("F", bound=Callable[..., Any])

# Where signing in leads: the first of these pages the person may open (supervision for supervisors,
# their referrals for caseworkers, the inbox for partner staff, deliveries for admins, the audit log for
# auditors, reports for analysts; a plain page for a role with none of them).
HOMES = (
    (Action.LIST_OVERDUE, "web.supervision"),
    (Action.LIST_REFERRALS, "web.referral_list"),
    (Action.LIST_ASSIGNMENTS, "web.inbox"),
    (Action.READ_DELIVERIES, "web.deliveries"),
    (Action.READ_AUDIT, "web.audit_log"),
    (Action.REPORT_STATISTICS, "web.reports_page"),
)
PAGE_SIZE = 25
ASSIGNMENT_STATUSES = [s.value for s in AssignmentStatus]


def services() -> Any:
    return current_app.extensions["referral_services"]


SESSION_KEY = "sid"  # the server-side session's id; the database keeps only its digest


def current_actor() -> Actor | None:
    if "web_actor" not in g:
        sid = session.get(SESSION_KEY)
        g.web_actor = sessions.resolve(services(), sid) if isinstance(sid, str) else None
        if sid is not None and g.web_actor is None:
            session.pop(SESSION_KEY, None)  # ended or timed out: no need to look it up again
            g.session_ended = True
    actor: Actor | None = g.web_actor
    return actor


def error_page(status: int, title: str, message: str) -> Any:
    return render_template("error.html", title=title, message=message), status


def forbidden_page() -> Any:
    return error_page(403, _("Not allowed"), _("Your role does not give access to this page."))


def page(action: Action) -> Callable[[F], F]:
    """Signed in (else to /login, coming back afterwards) and of a role the access policy lets take
    `action` at all (the service decides on the case itself)."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            actor = current_actor()
            if actor is None:
                target = request.full_path if request.method == "GET" else None
                if g.get("session_ended"):
                    flash(_("Your session has ended. Sign in again."), "info")
                return redirect(url_for("web.login", next=target))
            try:
                screen(services(), actor, action, asked=kwargs)  # the path's ids go on a refusal's record
            except Forbidden:
                return forbidden_page()
            return view(actor, *args, **kwargs)

        return guarded  # type: ignore[return-value]

    return wrap


def _safe_next(target: str | None) -> str | None:
    # Only paths on this site: an open redirect after sign-in is a phishing aid. No control
    # characters either: CR/LF cannot go into a Location header (a 500 before), and urlsplit
    # silently drops tabs and newlines, so it must not be the one to judge them.
    if not target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Any:
    # Service messages are English and written for API clients; people get a translated one per kind.
    titles = {
        404: (_("Not found"), _("There is nothing here, or it was removed.")),
        403: (_("Not allowed"), _("You may not see or change this.")),
        409: (
            _("Changed meanwhile"),
            _(
                "This was changed at the same time by someone else, or is no longer "
                "possible. Reload the page and try again."
            ),
        ),
        401: (_("Please sign in"), _("Your session has ended. Sign in again.")),
    }
    title, message = titles.get(exc.status, (_("Something is wrong"), _("The request could not be completed.")))
    return error_page(exc.status, title, message)


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    return error_page(
        400,
        _("Form expired"),
        _("This form has expired or was not sent from this site. Go back, reload the page and send it again."),
    )


@bp.after_request
def _page_headers(response: Any) -> Any:
    # Same-origin Referer lets Flask-WTF's HTTPS referrer check pass; nothing leaks to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    return response


@bp.app_context_processor
def _policy_globals() -> dict[str, Any]:
    """The access policy for templates: which links and columns a role gets (what a person may do on
    one referral comes from `referrals.available_actions`)."""

    def may(action: str) -> bool:
        actor = current_actor() if request.blueprint == "web" else None
        return actor is not None and access.role_may(actor.role, Action(action))

    def sees_all(action: str) -> bool:
        actor = current_actor() if request.blueprint == "web" else None
        return actor is not None and access.scope(actor.role, Action(action)) is Scope.ALL

    return {"may": may, "sees_all": sees_all}


# -- signing in ---------------------------------------------------------------------------------------
@bp.get("/")
def home() -> Any:
    actor = current_actor()
    if actor is None:
        return redirect(url_for("web.login"))
    endpoint = next((e for action, e in HOMES if access.role_may(actor.role, action)), None)
    if endpoint is None:
        return render_template("home.html")
    return redirect(url_for(endpoint))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    state = FormState()
    next_url = _safe_next(request.values.get("next"))
    if request.method == "POST":
        name = (request.form.get("name") or "").strip()[:200]
        password = (request.form.get("password") or "")[:1000]
        state.values["name"] = name
        if not name:
            state.errors["name"] = [_("This field is required.")]
        if not password:
            state.errors["password"] = [_("This field is required.")]
        if not state.errors:
            try:
                actor = users.sign_in(services(), name, password)
            except Unauthenticated:
                # One message for an unknown name, a wrong password and a paused account alike.
                state.errors["_form"] = [
                    _(
                        "Wrong name or password. After repeated failures, sign-in is paused "
                        "for a while; wait and try again."
                    )
                ]
            else:
                lang = session.get("lang")
                session.clear()  # a fresh session on sign-in: no fixation of a pre-login cookie
                session.permanent = False  # a browser-session cookie; the server decides when it ends
                session[SESSION_KEY] = sessions.start(services(), actor.user_id)
                if lang:
                    session["lang"] = lang
                return redirect(next_url or url_for("web.home"))
        return render_template("login.html", form=state, next_url=next_url), 422
    return render_template("login.html", form=state, next_url=next_url)


@bp.errorhandler(RateLimitExceeded)
def _too_many_sign_ins(exc: RateLimitExceeded) -> Any:
    state = FormState(values={"name": (request.form.get("name") or "").strip()[:200]})
    state.errors["_form"] = [_("Too many sign-in attempts from your network address. Wait a minute and try again.")]
    response = make_response(
        render_template("login.html", form=state, next_url=_safe_next(request.values.get("next"))), 429
    )
    response.headers["Retry-After"] = str(retry_after_seconds())
    return response


@bp.post("/logout")
def logout() -> Any:
    sid = session.get(SESSION_KEY)
    if isinstance(sid, str):
        sessions.end(services(), sid)  # every copy of the cookie stops working, not just this one
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("You are signed out."), "info")
    return redirect(url_for("web.login"))


# -- referrals ---------------------------------------------------------------------------------------
def _referral_form_context(state: FormState) -> dict[str, Any]:
    return {
        "form": state,
        "provinces": choices("province", provinces()),
        "districts_by_province": [(p, label, districts(p)) for p, label in choices("province", provinces())],
        "sexes": choices("sex", SEXES),
        "preferred_languages": choices("language", LANGUAGES),
        "services_": choices("service", SERVICES),
        "risk_levels": choices("risk", RISK_LEVELS),
        "consent_methods": choices("consent_method", CONSENT_METHODS),
        "share_scopes": choices("share", SHARE_SCOPES),
        "staff_sexes": choices("staff_sex", STAFF_SEX_PREFERENCES),
        # One-time token: the idempotency key of this rendering of the form, so a double click or a
        # back-and-resend makes one referral, not two.
        "form_token": secrets.token_urlsafe(24),
    }


_FORM_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _form_idempotency_key() -> str | None:
    token = request.form.get("form_token") or ""
    return f"web-form:{token}" if _FORM_TOKEN.fullmatch(token) else None


@bp.route("/referrals/new", methods=["GET", "POST"])
@page(Action.SUBMIT_REFERRAL)
def referral_new(actor: Actor) -> Any:
    if request.method == "GET":
        state = FormState(
            values={"subject.sex": "undisclosed", "preferences.staff_sex": "any", "needs": [], "consent.share": []}
        )
        return render_template("referral_new.html", **_referral_form_context(state))
    state = FormState(values=referral_values(request.form))
    payload = referral_payload(state.values)
    cmd, state.errors = load(ReferralInputSchema(), payload)
    if cmd is None:
        flash(_("Please correct the fields marked below."), "error")
        return render_template("referral_new.html", **_referral_form_context(state)), 422
    key = _form_idempotency_key()
    try:
        outcome = referrals.submit_referral(
            services(), cmd, actor, idempotency_key=key, mac=referrals.request_mac(services(), payload) if key else None
        )
    except Conflict:
        # The same form sent again with other details: nothing is stored; a fresh form lets them decide.
        flash(
            _(
                "This form was already sent once with other details. Check them and send it again to make a "
                "new referral."
            ),
            "error",
        )
        return render_template("referral_new.html", **_referral_form_context(state)), 409
    body = outcome.body
    if outcome.replayed:
        flash(_("This form was already submitted; this is the referral it made."), "info")
        return redirect(url_for("web.referral_detail", referral_id=body["id"]))
    flash(_("Referral %(reference)s was submitted.", reference=body["reference"]), "success")
    for warning in body.get("warnings", []):
        if warning.get("code") == "possible_repeat_referral":
            # Only referrals this user may see are named (the service leaves the rest out).
            flash(
                _(
                    "Possible repeat referral: the %(matched)s matches an earlier referral (%(earlier)s). "
                    "This referral is kept separate until a supervisor confirms they are the same person.",
                    matched=_matched_words(warning.get("matched_on") or []),
                    earlier=", ".join(warning.get("earlier_references", [])),
                ),
                "warning",
            )
    if not cmd.consent_given:
        flash(
            _("Not routed: consent was not given. The referral is stored but not shared with any partner."), "warning"
        )
    return redirect(url_for("web.referral_detail", referral_id=body["id"]))


def _matched_words(columns: list[str]) -> str:
    if set(columns) >= {"cnic", "phone"}:
        return _("CNIC and phone number")
    return _("CNIC") if "cnic" in columns else _("phone number")


@bp.get("/referrals")
@page(Action.LIST_REFERRALS)
def referral_list(actor: Actor) -> Any:
    status = request.args.get("status") or None
    if status not in (None, *(s.value for s in ReferralStatus)):
        status = None
    result = referrals.list_referrals(
        services(), actor, status=status, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None
    )
    return render_template(
        "referrals.html",
        items=result["items"],
        next_cursor=result["next"],
        status=status,
        statuses=choices("referral_status", [s.value for s in ReferralStatus]),
    )


def _partner_names() -> dict[str, str]:
    return partners.partner_names(services())


def _render_referral(
    actor: Actor, referral_id: str, forms: dict[str, FormState] | None = None, status: int = 200
) -> Any:
    referral = referrals.get_referral(services(), referral_id, actor)
    return render_template(
        "referral_detail.html",
        r=referral,
        actions=referrals.available_actions(services(), referral_id, actor),
        partner_names=_partner_names(),
        forms=forms or {},
        blank=FormState(),
        decline_reasons=choices("decline", DECLINE_REASONS),
        close_outcomes=choices("close", CLOSE_OUTCOMES),
        followup_outcomes=choices("followup", FOLLOWUP_OUTCOMES),
    ), status


@bp.get("/referrals/<referral_id>")
@page(Action.READ_REFERRAL)
def referral_detail(actor: Actor, referral_id: str) -> Any:
    return _render_referral(actor, referral_id)


# -- the caseworker's or a supervisor's own actions on a referral --------------------------------------------
def _case_form_errors(actor: Actor, referral_id: str, kind: str, errors: dict[str, list[str]]) -> Any:
    state = FormState(
        values={"note": (request.form.get("note") or "")[:TEXT_MAX], "confirm": request.form.get("confirm") or ""},
        errors=errors,
    )
    flash(_("Please correct the fields marked below."), "error")
    return _render_referral(actor, referral_id, {kind: state}, status=422)


def _case_action(
    actor: Actor,
    referral_id: str,
    kind: str,
    schema: Schema,
    command: Callable[[str, Any], Any],
    action: Callable[[Any, Any, Actor], Any],
    done: str,
    extra_errors: dict[str, list[str]] | None = None,
) -> Any:
    """Validate the note form, make the one service call, and come back to the referral."""
    data, errors = load(schema, note_only_payload(request.form))
    errors = {**errors, **(extra_errors or {})}
    if errors:
        return _case_form_errors(actor, referral_id, kind, errors)
    try:
        action(services(), command(referral_id, data.get("note")), actor)
    except Conflict as exc:
        return _conflict(exc, referral_id)
    flash(done, "success")
    return redirect(url_for("web.referral_detail", referral_id=referral_id))


@bp.post("/referrals/<referral_id>/consent/withdraw")
@page(Action.WITHDRAW_CONSENT)
def referral_withdraw_consent(actor: Actor, referral_id: str) -> Any:
    # Withdrawing consent cannot be undone (a new referral needs new consent), so one stray click must not do it.
    unconfirmed = (
        {"confirm": [_("Tick the box to confirm that the person withdrew consent.")]}
        if request.form.get("confirm") != "yes"
        else None
    )
    return _case_action(
        actor,
        referral_id,
        "withdraw_consent",
        WithdrawSchema(),
        WithdrawConsent,
        referrals.withdraw_consent,
        _("Consent withdrawn. Open offers were pulled back and partners no longer see this referral."),
        unconfirmed,
    )


@bp.post("/referrals/<referral_id>/withdraw")
@page(Action.WITHDRAW_REFERRAL)
def referral_withdraw(actor: Actor, referral_id: str) -> Any:
    return _case_action(
        actor,
        referral_id,
        "withdraw",
        WithdrawSchema(),
        WithdrawReferral,
        referrals.withdraw_referral,
        _("The referral was withdrawn. Open offers were pulled back."),
    )


@bp.post("/referrals/<referral_id>/reopen")
@page(Action.REOPEN_REFERRAL)
def referral_reopen(actor: Actor, referral_id: str) -> Any:
    return _case_action(
        actor,
        referral_id,
        "reopen",
        ReopenSchema(),
        ReopenReferral,
        referrals.reopen_referral,
        _("The referral was re-opened and will be offered to partners again."),
    )


# -- partner side ------------------------------------------------------------------------------------
@bp.get("/inbox")
@page(Action.LIST_ASSIGNMENTS)
def inbox(actor: Actor) -> Any:
    status = request.args.get("status") or None
    if status not in (None, *ASSIGNMENT_STATUSES):
        status = None
    result = assignments.inbox(
        services(), actor, status=status, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None, visit=True
    )
    return render_template(
        "inbox.html",
        items=result["items"],
        last_visit=result["last_visit"],
        news=Counter(item["news"] for item in result["items"] if item["news"]),
        next_cursor=result["next"],
        status=status,
        statuses=choices("assignment_status", ASSIGNMENT_STATUSES),
        partner_names=_partner_names(),
    )


def _back_to(referral_id: str | None) -> Any:
    target = _safe_next(request.form.get("next"))
    if target:
        return redirect(target)
    if referral_id:
        return redirect(url_for("web.referral_detail", referral_id=referral_id))
    return redirect(url_for("web.inbox"))


# What a person is told when a move they may make could not be made, per domain exception (the most
# specific class that is named wins, so a new kind of conflict gets the general message until it has one).
CONFLICT_MESSAGES: dict[type[Conflict], LazyString] = {
    RecordDamaged: _l(
        "This person's record is damaged, so nothing new can be stored for them. Ask an administrator to check it."
    ),
    PersonErased: _l("This person's data was erased on request, so no new note can be stored. Save it without a note."),
    Conflict: _l(
        "This was changed at the same time by someone else, or is no longer possible. Reload the page and try again."
    ),
}


def _conflict_message(exc: Conflict) -> LazyString:
    return next(CONFLICT_MESSAGES[c] for c in type(exc).__mro__ if c in CONFLICT_MESSAGES)


def _conflict(exc: Conflict, referral_id: str | None = None) -> Any:
    flash(str(_conflict_message(exc)), "error")
    return _back_to(referral_id or request.form.get("referral_id"))


@bp.post("/assignments/<assignment_id>/accept")
@page(Action.ACCEPT_ASSIGNMENT)
def assignment_accept(actor: Actor, assignment_id: str) -> Any:
    try:
        view = assignments.accept(services(), AcceptAssignment(assignment_id), actor)
    except Conflict as exc:
        return _conflict(exc)
    flash(_("You accepted the case. Contact the person soon."), "success")
    return redirect(url_for("web.referral_detail", referral_id=view["referral_id"]))


def _with_form(actor: Actor, kind: str, assignment_id: str, errors: dict[str, list[str]], status: int = 422) -> Any:
    referral_id = request.form.get("referral_id") or ""
    values: dict[str, Any] = dict(request.form.items())
    values["services_delivered"] = request.form.getlist("services_delivered")
    state = FormState(values=values, errors=errors)
    flash(_("Please correct the fields marked below."), "error")
    return _render_referral(actor, referral_id, {f"{kind}:{assignment_id}": state}, status=status)


@bp.post("/assignments/<assignment_id>/decline")
@page(Action.DECLINE_ASSIGNMENT)
def assignment_decline(actor: Actor, assignment_id: str) -> Any:
    data, errors = load(DeclineSchema(), note_payload(request.form, "reason"))
    if errors:
        return _with_form(actor, "decline", assignment_id, errors)
    try:
        assignments.decline(services(), DeclineAssignment(assignment_id, data["reason"], data.get("note")), actor)
    except Conflict as exc:
        return _conflict(exc)
    flash(_("You declined the case; it is being offered to another partner."), "success")
    return redirect(url_for("web.inbox"))


@bp.post("/assignments/<assignment_id>/followup")
@page(Action.RECORD_FOLLOWUP)
def assignment_followup(actor: Actor, assignment_id: str) -> Any:
    data, errors = load(FollowUpSchema(), note_payload(request.form, "outcome"))
    if errors:
        return _with_form(actor, "followup", assignment_id, errors)
    try:
        assignments.record_followup(services(), RecordFollowUp(assignment_id, data["outcome"], data.get("note")), actor)
    except Conflict as exc:
        return _conflict(exc)
    flash(_("Follow-up recorded."), "success")
    return _back_to(request.form.get("referral_id"))


@bp.post("/assignments/<assignment_id>/close")
@page(Action.CLOSE_ASSIGNMENT)
def assignment_close(actor: Actor, assignment_id: str) -> Any:
    payload = {
        **note_payload(request.form, "outcome"),
        "services_delivered": request.form.getlist("services_delivered")[:20],
    }
    data, errors = load(CloseSchema(), payload)
    if errors:
        return _with_form(actor, "close", assignment_id, errors)
    try:
        cmd = CloseAssignment(assignment_id, data["outcome"], data.get("note"), data["services_delivered"])
        view = assignments.close(services(), cmd, actor)
    except Conflict as exc:
        if "services_delivered" in exc.fields:  # the state machine's rule, shown next to the boxes
            return _with_form(
                actor,
                "close",
                assignment_id,
                {"services_delivered": [_("Only the service offered in this case can be marked as delivered.")]},
                status=409,
            )
        return _conflict(exc)
    flash(_("The case is closed."), "success")
    # Whoever sees every referral goes back to this one; a partner no longer holds the case, so it
    # goes back to its inbox.
    if access.scope(actor.role, Action.LIST_REFERRALS) is Scope.ALL:
        return redirect(url_for("web.referral_detail", referral_id=view["referral_id"]))
    return redirect(url_for("web.inbox"))


# -- supervisors and auditors --------------------------------------------------------------------------
@bp.get("/supervision")
@page(Action.LIST_OVERDUE)
def supervision(actor: Actor) -> Any:
    overdue = deadlines.overdue(services(), actor)["items"]
    unroutable = referrals.list_referrals(
        services(), actor, status=ReferralStatus.UNROUTABLE.value, limit=100, cursor=None
    )
    pending = duplicates.list_duplicates(
        services(), actor, status=DuplicateStatus.PENDING.value, limit=PAGE_SIZE, cursor=None
    )
    return render_template(
        "supervision.html",
        overdue=overdue,
        escalated=sum(1 for d in overdue if d["escalated"]),
        policy=deadlines.effective_policy(services(), actor)["levels"],
        risk_levels=RISK_LEVELS,
        unroutable=unroutable["items"],
        unroutable_more=unroutable["next"] is not None,
        partner_names=_partner_names(),
        duplicates=pending["items"],
        duplicates_more=pending["next"] is not None,
    )


def _decide_duplicate(
    actor: Actor, cmd: ConfirmDuplicate | DismissDuplicate, decide: Callable[[Any, Any, Actor], Any], done: str
) -> Any:
    try:
        decide(services(), cmd, actor)
    except Conflict:
        flash(_("Another supervisor has already decided on this pair."), "error")
    else:
        flash(done, "success")
    return redirect(url_for("web.supervision"))


@bp.post("/supervision/duplicates/<duplicate_id>/confirm")
@page(Action.CONFIRM_DUPLICATE)
def duplicate_confirm(actor: Actor, duplicate_id: str) -> Any:
    return _decide_duplicate(
        actor,
        ConfirmDuplicate(duplicate_id),
        duplicates.confirm,
        _("Confirmed: the two referrals are now linked as one person. Each keeps its own details and consent."),
    )


@bp.post("/supervision/duplicates/<duplicate_id>/dismiss")
@page(Action.DISMISS_DUPLICATE)
def duplicate_dismiss(actor: Actor, duplicate_id: str) -> Any:
    return _decide_duplicate(
        actor,
        DismissDuplicate(duplicate_id),
        duplicates.dismiss,
        _("Dismissed: the two referrals stay separate people."),
    )


# -- admins: what was sent to partners' systems -----------------------------------------------------------
@bp.get("/deliveries")
@page(Action.READ_DELIVERIES)
def deliveries(actor: Actor) -> Any:
    names = _partner_names()
    chosen = request.args.get("partner") or next(iter(sorted(names)), None)
    items: list[dict[str, Any]] = []
    if chosen in names:
        items = notifications.list_deliveries(services(), actor, chosen, limit=50)["items"]
    return render_template("deliveries.html", partner_names=names, chosen=chosen, items=items)


@bp.post("/deliveries/<partner_id>/<delivery_id>/replay")
@page(Action.REPLAY_DELIVERY)
def delivery_replay(actor: Actor, partner_id: str, delivery_id: str) -> Any:
    notifications.replay_delivery(services(), actor, partner_id, delivery_id)
    flash(
        _("Sent again shortly, with the same webhook-id, so the partner's system can tell it is a repeat."), "success"
    )
    return redirect(url_for("web.deliveries", partner=partner_id))


# -- auditors -------------------------------------------------------------------------------------------
# Known action codes, offered as suggestions in the filter (any code the log holds may be typed).
AUDIT_ACTIONS = sorted({a.value for a in Action} | {"referrals.incident.read", "subject.erase", "auth.sign_in"})


def _audit_filters() -> tuple[FormState, Any]:
    """The filter form as entered, and the log's filter (None when a field is invalid)."""
    values = {name: (request.args.get(name) or "").strip()[:200] for name in FILTER_NAMES}
    data, errors = load(AuditFilterSchema(), {k: v for k, v in values.items() if v})
    if data is None:
        return FormState(values=values, errors=errors), None
    for name in ("since", "until"):  # as a datetime-local box shows it (UTC), whatever form the link gave
        if data.get(name) is not None:
            values[name] = data[name].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return FormState(values=values), audit_filter(data)


def _filter_args(state: FormState) -> dict[str, str]:
    return {k: v for k, v in state.values.items() if v}


@bp.get("/audit")
@page(Action.READ_AUDIT)
def audit_log(actor: Actor) -> Any:
    state, where = _audit_filters()
    page_: dict[str, Any] = {"items": [], "next": None}
    status = 200
    if where is None:
        flash(_("Please correct the fields marked below."), "error")
        status = 422
    else:
        page_ = audit.query(services(), actor, where, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None)
    # Verifying recomputes the whole log: only when asked for, not on every page of entries.
    report = audit.verify(services(), actor) if request.args.get("verify") == "1" and where is not None else None
    return render_template(
        "audit.html",
        form=state,
        filters=_filter_args(state),
        items=page_["items"],
        next_cursor=page_["next"],
        paged=bool(request.args.get("cursor")),
        report=AuditVerifySchema().dump(report) if report is not None else None,
        actions=AUDIT_ACTIONS,
        partner_names=_partner_names(),
    ), status


@bp.get("/audit/export.csv")
@page(Action.EXPORT_AUDIT)
def audit_export(actor: Actor) -> Any:
    state, where = _audit_filters()
    if where is None:
        return error_page(422, _("Something is wrong"), _("Correct the filters on the audit page, then export again."))
    rows = audit.export_rows(services(), actor, where)
    return Response(
        audit_csv(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="audit-export.csv"'},
    )


def _access_page(kind: str, report: dict[str, Any]) -> Any:
    return render_template("audit_access.html", kind=kind, report=report, partner_names=_partner_names())


@bp.get("/audit/referrals/<referral_id>")
@page(Action.READ_AUDIT)
def audit_referral_access(actor: Actor, referral_id: str) -> Any:
    return _access_page("referral", audit.access_report(services(), actor, referral_id=referral_id))


@bp.get("/audit/subjects/<subject_id>")
@page(Action.READ_AUDIT)
def audit_subject_access(actor: Actor, subject_id: str) -> Any:
    return _access_page("subject", audit.access_report(services(), actor, subject_id=subject_id))


# -- reports (supervisors; analysts see the statistics only) ------------------------------------------------
# The label kind of each statistics dimension's values (districts and months read as they are).
_DIMENSION_LABELS = {
    "province": "province",
    "need": "service",
    "risk_level": "risk",
    "sex": "sex",
    "status": "referral_status",
}


def _dimension_names() -> dict[str, str]:
    return {
        "province": _("Province"),
        "district": _("District"),
        "need": _("Need"),
        "risk_level": _("Risk"),
        "sex": _("Sex"),
        "age_band": _("Age band"),
        "month": _("Month"),
        "status": _("Status"),
    }


def _value_label(dimension: str, value: str) -> str:
    if value == UNKNOWN:
        return _("Unknown")
    kind = _DIMENSION_LABELS.get(dimension)
    return label(kind, value) if kind else value


def _report_args() -> tuple[Any, Any, tuple[str, ...], list[str]]:
    """from, to and by from the query string; what is wrong is said on the page, with defaults used."""
    problems: list[str] = []
    dates = []
    for name in ("from", "to"):
        raw = request.args.get(name) or ""
        try:
            dates.append(date.fromisoformat(raw) if raw else None)
        except ValueError:
            dates.append(None)
            problems.append(_("Enter a date as YYYY-MM-DD."))
    try:
        by = reports.parse_dimensions(request.args.get("by") or None)
    except DomainError:
        by = ("risk_level",)
        problems.append(_("Choose one or two different dimensions."))
    if dates[0] and dates[1] and dates[0] > dates[1]:
        dates = [None, None]
        problems.append(_("The first day must not be after the last."))
    return dates[0], dates[1], by, problems


def _statistics_view(report: dict[str, Any], rtl: bool) -> dict[str, Any]:
    by = report["by"]
    names = _dimension_names()
    small = _("<%(n)s", n=report["threshold"])
    first = by[0]
    firsts = list(dict.fromkeys(c[first] for c in report["cells"]))
    view: dict[str, Any] = {"by": by, "names": names, "small": small, "first_values": firsts}
    if len(by) == 1:
        view["rows"] = [(_value_label(first, c[first]), c) for c in report["cells"]]
        series = [(_("Referrals"), [c["count"] for c in report["cells"]])]
        stacked = False
    else:
        second = by[1]
        seconds = list(dict.fromkeys(c[second] for c in report["cells"]))
        grid = {(c[first], c[second]): c for c in report["cells"]}
        view["columns"] = [(_value_label(second, v), v) for v in seconds]
        view["grid"] = [(_value_label(first, a), [grid[(a, b)] for b in seconds]) for a in firsts]
        series = [(_value_label(second, b), [grid[(a, b)]["count"] for a in firsts]) for b in seconds]
        stacked = True
    title = _("Referrals by %(dimensions)s", dimensions=" × ".join(names[d] for d in by))
    view["title"] = title
    view["chart"] = charts.bar_chart(
        title, [_value_label(first, v) for v in firsts], series, rtl=rtl, stacked=stacked, y_title=_("Referrals")
    )
    return view


def _sla_view(report: dict[str, Any], rtl: bool) -> dict[str, Any]:
    names = _partner_names()
    rows = [
        (f"{names.get(r['partner_id'], r['partner_id'])} · {label('risk', r['risk_level'])}", r) for r in report["rows"]
    ]
    labels = [name for name, _row in rows]
    hours = charts.bar_chart(
        _("Median hours to accept and to first contact"),
        labels,
        [
            (_("To accept"), [r["median_hours_to_accept"] for _n, r in rows]),
            (_("To first contact"), [r["median_hours_to_first_contact"] for _n, r in rows]),
        ],
        rtl=rtl,
        y_title=_("Hours"),
    )
    kept = charts.bar_chart(
        _("Deadlines met and missed"),
        labels,
        [
            (_("Met"), [r["deadlines_met"] for _n, r in rows]),
            (_("Missed"), [r["deadlines_missed"] for _n, r in rows]),
        ],
        rtl=rtl,
        stacked=True,
    )
    return {"rows": rows, "hours_chart": hours, "deadlines_chart": kept}


@bp.get("/reports")
@page(Action.REPORT_STATISTICS)
def reports_page(actor: Actor) -> Any:
    start, end, by, problems = _report_args()
    for problem in problems:
        flash(problem, "error")
    rtl = str(get_locale() or "en") in ("ur",)
    stats = reports.statistics_report(services(), actor, by, start, end)
    sla = None
    if access.role_may(actor.role, Action.REPORT_SLA):
        sla = _sla_view(reports.sla_report(services(), actor, start, end), rtl)
    return render_template(
        "reports.html",
        stats=stats,
        view=_statistics_view(stats, rtl),
        sla=sla,
        dimensions=[(d, _dimension_names()[d]) for d in DIMENSIONS],
        start=stats["from"],
        end=stats["to"],
        by=by,
    )


@bp.get("/reports/statistics.csv")
@page(Action.REPORT_STATISTICS)
def statistics_csv(actor: Actor) -> Any:
    start, end, by, _problems = _report_args()
    report = reports.statistics_report(services(), actor, by, start, end)
    response = make_response(reports.statistics_csv(report))
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    name = f"statistics-{'-'.join(by)}-{report['from']}-{report['to']}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
