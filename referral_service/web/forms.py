"""HTML form data ↔ the API's schemas, so a form and a JSON request obey exactly the same rules.

Form field names are the schema's dotted paths (``subject.full_name``), which is how marshmallow's
nested error messages are mapped back next to the right field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from marshmallow import Schema, ValidationError
from werkzeug.datastructures import MultiDict

from referral_service.domain.text import unstorable
from referral_service.web.i18n import translate_error

SUBJECT_FIELDS = (
    "full_name",
    "date_of_birth",
    "sex",
    "cnic",
    "phone",
    "address",
    "province",
    "district",
    "preferred_language",
)
INCIDENT_FIELDS = ("type", "date", "narrative")
MULTI_FIELDS = ("needs", "consent.share")
TEXT_MAX = 10_000  # far above every schema limit; stops absurd posts before they reach the schema


@dataclass
class FormState:
    """What a form shows: the values as entered (kept after an error) and translated errors per field."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)

    def has(self, name: str, code: str) -> bool:
        """For checkboxes and radios: is ``code`` among the chosen values of ``name``?"""
        chosen = self.values.get(name)
        if isinstance(chosen, list):
            return code in chosen
        return chosen == code


def _text(form: MultiDict[str, str], name: str) -> str | None:
    raw = form.get(name, "")
    value = raw.strip()[:TEXT_MAX]
    # An empty optional box means "not given", which the schemas express as absent or null.
    return value or None


def referral_values(form: MultiDict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in (
        *(f"subject.{f}" for f in SUBJECT_FIELDS),
        *(f"incident.{f}" for f in INCIDENT_FIELDS),
        "risk_level",
        "consent.given",
        "consent.method",
        "preferences.staff_sex",
    ):
        values[name] = (form.get(name) or "")[:TEXT_MAX]
    for name in MULTI_FIELDS:
        values[name] = [v for v in form.getlist(name) if v][:20]
    return values


def referral_payload(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the API would receive for these form values."""
    form: MultiDict[str, str] = MultiDict({k: v for k, v in values.items() if isinstance(v, str)})
    subject = {f: v for f in SUBJECT_FIELDS if (v := _text(form, f"subject.{f}")) is not None}
    incident = {f: v for f in INCIDENT_FIELDS if (v := _text(form, f"incident.{f}")) is not None}
    payload: dict[str, Any] = {"subject": subject, "incident": incident, "needs": values["needs"]}
    if risk := _text(form, "risk_level"):
        payload["risk_level"] = risk
    consent: dict[str, Any] = {"share": values["consent.share"]}
    given = _text(form, "consent.given")
    if given is not None:
        consent["given"] = given  # "yes"/"no": marshmallow's Boolean reads both
    if method := _text(form, "consent.method"):
        consent["method"] = method
    payload["consent"] = consent
    if staff_sex := _text(form, "preferences.staff_sex"):
        payload["preferences"] = {"staff_sex": staff_sex}
    return payload


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested ``{"subject": {"cnic": [...]}}`` → ``{"subject.cnic": [translated...]}``.

    List items' errors (``{"needs": {0: [...]}}``) belong to the list's own field.
    """
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = prefix if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
            if key == "_schema":
                name = prefix or "_form"
            for sub, msgs in flatten_errors(value, name).items():
                out.setdefault(sub, []).extend(m for m in msgs if m not in out.get(sub, []))
    elif isinstance(messages, list | tuple):
        for item in messages:
            if isinstance(item, dict | list | tuple):
                for sub, msgs in flatten_errors(item, prefix).items():
                    out.setdefault(sub, []).extend(msgs)
            else:
                out.setdefault(prefix or "_form", []).append(translate_error(str(item)))
    else:
        out.setdefault(prefix or "_form", []).append(translate_error(str(messages)))
    return out


def load(schema: Schema, payload: dict[str, Any]) -> tuple[Any, dict[str, list[str]]]:
    """(loaded value, {}) or (None, field errors ready to show). Text that cannot be stored (a NUL; the
    API's rule, `domain.text`) is marked on its field before the schema looks at anything."""
    unstorable_at = [name for name, value in _texts(payload) if unstorable(value)]
    if unstorable_at:
        message = _("This text holds a character that cannot be stored. Retype it and send the form again.")
        return None, {name: [message] for name in unstorable_at}
    try:
        return schema.load(payload), {}
    except ValidationError as exc:
        return None, flatten_errors(exc.messages)


def _texts(payload: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(form field name, text) of every string in a payload: the dotted path, as the form names it."""
    if isinstance(payload, str):
        return [(prefix, payload)]
    if isinstance(payload, dict):
        return [t for key, value in payload.items() for t in _texts(value, f"{prefix}.{key}" if prefix else key)]
    if isinstance(payload, list):
        return [t for value in payload for t in _texts(value, prefix)]
    return []


def note_payload(form: MultiDict[str, str], choice_field: str) -> dict[str, Any]:
    """Decline, follow-up and close forms: one choice plus an optional note."""
    payload: dict[str, Any] = {}
    if choice := _text(form, choice_field):
        payload[choice_field] = choice
    if note := _text(form, "note"):
        payload["note"] = note
    return payload


def note_only_payload(form: MultiDict[str, str]) -> dict[str, Any]:
    """Withdraw and re-open forms: just the note, absent when the box was left empty."""
    payload: dict[str, Any] = {}
    if note := _text(form, "note"):
        payload["note"] = note
    return payload
