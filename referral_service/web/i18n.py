"""Languages of the web pages: choosing one, labels for the domain's codes, and translated field errors.

Codes (``medical``, ``no_capacity``…) stay the values sent and stored; only what people read is translated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import request, session
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

log = logging.getLogger(__name__)

LANGS = ("en", "ur")
RTL_LANGS = frozenset({"ur"})
LANG_NAMES = {"en": "English", "ur": "اردو"}
TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"


def select_locale() -> str:
    """``?lang=`` (remembered in the session), else what was remembered, else ``Accept-Language``."""
    asked = request.args.get("lang")
    if asked in LANGS:
        session["lang"] = asked
        return asked
    remembered = session.get("lang")
    if remembered in LANGS:
        return str(remembered)
    return request.accept_languages.best_match(LANGS, default="en") or "en"


def compile_catalogs(directory: Path = TRANSLATIONS_DIR) -> list[Path]:
    """Compile every ``.po`` whose ``.mo`` is missing or older (what ``make translations`` does).

    Called at start-up so a checkout or an installed wheel (which ships only ``.po``) still shows
    Urdu; a read-only install logs a warning and falls back to English instead of failing.
    """
    written: list[Path] = []
    for po in sorted(directory.glob("*/LC_MESSAGES/*.po")):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        try:
            with po.open("rb") as src:
                catalog = read_po(src, locale=po.parent.parent.name)
            with mo.open("wb") as out:
                write_mo(out, catalog)
            written.append(mo)
        except OSError as exc:
            log.warning("could not compile %s (%s); that language falls back to English", po.name, type(exc).__name__)
    return written


# -- labels for codes -------------------------------------------------------------------------------
SERVICE_LABELS: dict[str, LazyString] = {
    "medical": _l("Medical care"),
    "psychosocial": _l("Psychosocial support"),
    "legal_aid": _l("Legal aid"),
    "shelter": _l("Shelter"),
    "livelihood": _l("Livelihood"),
    "financial": _l("Financial support"),
    "education": _l("Education"),
}
RISK_LABELS = {"critical": _l("Critical"), "high": _l("High"), "medium": _l("Medium"), "low": _l("Low")}
SEX_LABELS = {"female": _l("Female"), "male": _l("Male"), "other": _l("Other"), "undisclosed": _l("Prefers not to say")}
STAFF_SEX_LABELS = {"female": _l("Female staff"), "male": _l("Male staff"), "any": _l("No preference")}
CONSENT_METHOD_LABELS = {"verbal": _l("Verbal"), "written": _l("Written")}
SHARE_LABELS = {
    "contact": _l("Contact details (name, phone, address)"),
    "identity": _l("Identity (CNIC, date of birth)"),
    "incident": _l("Incident details"),
}
LANGUAGE_LABELS = {
    "ur": _l("Urdu"),
    "en": _l("English"),
    "ps": _l("Pashto"),
    "pa": _l("Punjabi"),
    "sd": _l("Sindhi"),
    "bal": _l("Balochi"),
    "skr": _l("Saraiki"),
    "hnd": _l("Hindko"),
    "bsk": _l("Burushaski"),
    "shi": _l("Shina"),
    "kas": _l("Kashmiri"),
    "brh": _l("Brahui"),
    "other": _l("Other language"),
}
DECLINE_LABELS = {
    "no_capacity": _l("No capacity"),
    "out_of_area": _l("Out of our area"),
    "service_not_offered": _l("Service not offered"),
    "cannot_contact": _l("Could not contact the person"),
    "other": _l("Other (explain in the note)"),
}
CLOSE_LABELS = {
    "services_delivered": _l("Services delivered"),
    "referred_elsewhere": _l("Referred elsewhere"),
    "client_declined": _l("The person declined"),
    "cannot_contact": _l("Could not contact the person"),
    "other": _l("Other (explain in the note)"),
}
FOLLOWUP_LABELS = {
    "contacted": _l("Contacted the person"),
    "service_started": _l("Service started"),
    "service_delivered": _l("Service delivered"),
    "no_contact": _l("Could not contact the person"),
    "client_declined": _l("The person declined"),
    "other": _l("Other (explain in the note)"),
}
REFERRAL_STATUS_LABELS = {
    "submitted": _l("Submitted"),
    "routing": _l("Offered to a partner"),
    "assigned": _l("Accepted by a partner"),
    "unroutable": _l("No partner found"),
    "withdrawn": _l("Withdrawn"),
    "closed": _l("Closed"),
}
ASSIGNMENT_STATUS_LABELS = {
    "offered": _l("Offered"),
    "accepted": _l("Accepted"),
    "declined": _l("Declined"),
    "expired": _l("Expired"),
    "withdrawn": _l("Withdrawn"),
    "closed": _l("Closed"),
}
DEADLINE_KIND_LABELS = {
    "accept": _l("Accept the offer"),
    "first_contact": _l("First contact"),
    "followup": _l("Follow-up"),
}
ROLE_LABELS = {
    "caseworker": _l("Caseworker"),
    "supervisor": _l("Supervisor"),
    "partner": _l("Partner staff"),
    "auditor": _l("Auditor"),
    "admin": _l("Administrator"),
    "analyst": _l("Analyst"),
}
PROVINCE_LABELS = {
    "Punjab": _l("Punjab"),
    "Sindh": _l("Sindh"),
    "Khyber Pakhtunkhwa": _l("Khyber Pakhtunkhwa"),
    "Balochistan": _l("Balochistan"),
    "Islamabad Capital Territory": _l("Islamabad Capital Territory"),
    "Gilgit-Baltistan": _l("Gilgit-Baltistan"),
    "Azad Jammu and Kashmir": _l("Azad Jammu and Kashmir"),
}
# The audit log: what was done (the `action` codes of the access policy and the vault), and which
# personal fields were seen. A code without a label (a newer one) shows as itself.
AUDIT_ACTION_LABELS = {
    "referral.submit": _l("Submitted the referral"),
    "referral.read": _l("Opened the referral"),
    "referral.list": _l("Saw the referral in a list"),
    "referrals.incident.read": _l("Read the incident details"),
    "referral.withdraw": _l("Withdrew the referral"),
    "referral.consent_withdraw": _l("Recorded that consent was withdrawn"),
    "referral.reopen": _l("Re-opened the referral"),
    "assignment.list": _l("Looked at the assignment inbox"),
    "assignment.accept": _l("Accepted the case"),
    "assignment.decline": _l("Declined the case"),
    "assignment.close": _l("Closed the case"),
    "followup.record": _l("Recorded a follow-up"),
    "duplicate.warn": _l("Was told of a possible repeat referral"),
    "duplicate.list": _l("Looked at possible duplicates"),
    "duplicate.confirm": _l("Confirmed a duplicate"),
    "duplicate.dismiss": _l("Dismissed a duplicate"),
    "subject.erase": _l("Erased the person's data"),
    "audit.read": _l("Looked at the audit log"),
    "audit.export": _l("Exported the audit log"),
    "audit.verify": _l("Verified the audit log"),
    "auth.sign_in": _l("Signed in"),
}
# "conflict": allowed, but the case had moved on (409), so nothing was done.
AUDIT_OUTCOME_LABELS = {"allowed": _l("Allowed"), "denied": _l("Refused"), "conflict": _l("Could not be done")}
FIELD_LABELS = {
    "full_name": _l("Name"),
    "date_of_birth": _l("Date of birth"),
    "sex": _l("Sex"),
    "cnic": _l("CNIC"),
    "phone": _l("Phone"),
    "address": _l("Address"),
    "incident": _l("Incident details"),
    "note": _l("Note"),
}

LABELS: dict[str, dict[str, Any]] = {
    "service": SERVICE_LABELS,
    "risk": RISK_LABELS,
    "sex": SEX_LABELS,
    "staff_sex": STAFF_SEX_LABELS,
    "consent_method": CONSENT_METHOD_LABELS,
    "share": SHARE_LABELS,
    "language": LANGUAGE_LABELS,
    "decline": DECLINE_LABELS,
    "close": CLOSE_LABELS,
    "followup": FOLLOWUP_LABELS,
    "referral_status": REFERRAL_STATUS_LABELS,
    "assignment_status": ASSIGNMENT_STATUS_LABELS,
    "deadline_kind": DEADLINE_KIND_LABELS,
    "role": ROLE_LABELS,
    "province": PROVINCE_LABELS,
    "audit_action": AUDIT_ACTION_LABELS,
    "audit_outcome": AUDIT_OUTCOME_LABELS,
    "field": FIELD_LABELS,
}


def label(kind: str, code: Any) -> str:
    """The reader's word for a code; an unknown code (a newer value) shows as itself, never an error."""
    if code is None:
        return ""
    return str(LABELS.get(kind, {}).get(code, code))


def choices(kind: str, codes: Iterable[str]) -> list[tuple[str, str]]:
    return [(code, label(kind, code)) for code in codes]


# -- field errors -----------------------------------------------------------------------------------
# The schemas speak English (they also answer the API); people using the forms read these instead.
_EXACT: dict[str, LazyString] = {
    "Missing data for required field.": _l("This field is required."),
    "Field may not be null.": _l("This field is required."),
    "Not a valid date.": _l("Enter a date as YYYY-MM-DD."),
    "Not a valid boolean.": _l("Choose yes or no."),
    "Not a valid string.": _l("Enter text."),
    "Not a valid list.": _l("Choose from the list."),
    "Unknown field.": _l("This field is not part of the form."),
    "must not be in the future": _l("The date must not be in the future."),
    "must not be blank": _l("This field is required."),
    "must contain letters, not only spaces or invisible characters": _l(
        "Enter the name in letters: spaces or invisible characters alone are not a name."
    ),
    "must be after 1900": _l("The date must be after 1900."),
    "CNIC must be 13 digits as #####-#######-#": _l("A CNIC has 13 digits: #####-#######-#."),
    "phone must be in international form, e.g. +923001234567": _l(
        "Enter the phone number in international form, e.g. +923001234567."
    ),
    "a Pakistani number is +92 followed by 9 or 10 digits": _l("A Pakistani number is +92 followed by 9 or 10 digits."),
    "unknown province": _l("Choose a province from the list."),
    "district is required": _l("This field is required."),
    "unknown district": _l("Choose a district from the list."),
    "district exists in several provinces; name the province": _l(
        "This district exists in several provinces; choose the province."
    ),
    "name at least one need": _l("Choose at least one need."),
    "say how consent was given: verbal or written": _l("Say how consent was given: verbal or written."),
    "explain 'other' in a note": _l("Explain 'other' in the note."),
    "Not a valid datetime.": _l("Enter a date and time."),
    "must be after since": _l("The end of the time range must be after its start."),
    "an action code such as referral.read": _l("Enter an action code such as referral.read."),
}
_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^Must be one of: "), lambda m: _l("Choose one of the options.")),
    (
        re.compile(r"^Longer than maximum length (\d+)\.$"),
        lambda m: _l("Too long: at most %(n)s characters.", n=m.group(1)),
    ),
    (re.compile(r"^Shorter than minimum length 1\.$"), lambda m: _l("This field is required.")),
    # Length(min=1, max=n): the forms send an empty box as absent ("required"), so only "too long" is left.
    (
        re.compile(r"^Length must be between 1 and (\d+)\.$"),
        lambda m: _l("Too long: at most %(n)s characters.", n=m.group(1)),
    ),
    (
        re.compile(r"^(.+) is not a district of (.+)$"),
        lambda m: _l(
            "%(district)s is not a district of %(province)s.",
            district=m.group(1),
            province=label("province", m.group(2)),
        ),
    ),
]


def translate_error(message: str) -> str:
    exact = _EXACT.get(message)
    if exact is not None:
        return str(exact)
    for pattern, make in _PATTERNS:
        match = pattern.search(message)
        if match:
            return str(make(match))
    return message
