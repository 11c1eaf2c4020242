"""JSON API under /api/v1: thin handlers (validate → one service call); the declared response schema
of each view (`api.openapi.operation`) shapes the answer."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, request
from marshmallow import Schema, ValidationError, fields

from referral_service.domain import text
from referral_service.domain.access import Action
from referral_service.domain.errors import Unauthenticated, ValidationFailed
from referral_service.domain.model import Actor
from referral_service.services import users
from referral_service.services.authorization import screen

bp = Blueprint("api", __name__, url_prefix="/api/v1")
View = TypeVar("View", bound=Callable[..., Any])


def services() -> Any:
    return current_app.extensions["referral_services"]


def current_actor() -> Actor:
    actor: Actor | None = g.get("actor")
    if actor is not None:
        return actor
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <token>")
    actor = users.actor_for_token(services(), token.strip())
    g.actor = actor
    return actor


def requires(action: Action) -> Callable[[View], View]:
    """Role before anything the request carries, as `web.views.page` does for the pages: a caller whose
    role no case could allow `action` is refused (and the refusal recorded) before the view reads its
    body or parameters, so a 400 or 422 never tells it what the endpoint takes. The service decides
    again on the case itself. Under `operation`, which answers for the view."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def screened(*args: Any, **kwargs: Any) -> Any:
            screen(services(), current_actor(), action, asked=kwargs)  # the path's ids go on a refusal's record
            return view(*args, **kwargs)

        return screened  # type: ignore[return-value]

    return wrap


@bp.after_request
def _bearer_challenge(response: Any) -> Any:
    # RFC 6750 §3: a 401 names the scheme; error="invalid_token" only when a bearer token was sent.
    if response.status_code == 401:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = 'Bearer realm="referral-service"'
        if scheme.lower() == "bearer" and token.strip():
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def _read_json() -> Any:
    """The body as JSON, or None when it is not JSON (as `request.get_json(silent=True)`)."""
    if not request.is_json:
        return None
    raw = request.get_data(cache=True)
    try:
        # Decoded as json.loads decodes bytes (UTF-8, or the UTF-16/32 it detects; surrogates let through),
        # so the check below reads the very text that was parsed.
        source = raw.decode(json.detect_encoding(raw), "surrogatepass")
        data = current_app.json.loads(source)
    except ValueError:  # not JSON, or not in the encoding it claims (UnicodeDecodeError is a ValueError)
        return None
    except RecursionError:
        # The json module raises RecursionError, not ValueError, on deeply nested input.
        raise MalformedJson("the body is nested too deeply") from None
    if text.unstorable_json(source):
        raise MalformedJson(text.MESSAGE)
    return data


def json_body() -> dict[str, Any]:
    data = _read_json()
    if data is None:
        raise MalformedJson("the body must be a JSON object (Content-Type: application/json)")
    if not isinstance(data, dict):
        raise MalformedJson("the body must be a JSON object")
    return data


def optional_json_body() -> dict[str, Any]:
    """For actions whose body is optional: none at all means `{}`, but a body sent must be a JSON object."""
    if not request.get_data(cache=True):
        return {}
    return json_body()


def load(schema: Schema, data: dict[str, Any]) -> Any:
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages
        fields = _without_unknown_names(messages, schema) if isinstance(messages, dict) else {"_schema": messages}
        raise ValidationFailed("the request has invalid fields", fields) from None


_UNKNOWN = ["Unknown field."]  # marshmallow's message for a key the schema does not have


def _without_unknown_names(messages: dict[Any, Any], schema: Schema | None) -> dict[Any, Any]:
    """An unknown key is the client's own text and could be anything (a person's name pasted into the
    wrong place), so it is never echoed: the answer counts an object's unknown fields and, for a likely
    typo, names the field of ours it resembles."""
    known = {f.data_key or name: f for name, f in (schema.fields.items() if schema is not None else ())}
    out: dict[Any, Any] = {}
    unknown: list[str] = []
    for key, value in messages.items():
        if value == _UNKNOWN:
            unknown.append(str(key))
        elif isinstance(value, dict):
            field = known.get(key)
            if isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
                # A list of objects: the messages are keyed by item index.
                out[key] = {
                    i: _without_unknown_names(v, field.inner.schema) if isinstance(v, dict) else v
                    for i, v in value.items()
                }
            else:
                out[key] = _without_unknown_names(value, field.schema if isinstance(field, fields.Nested) else None)
        else:
            out[key] = value
    if unknown:
        near = sorted({m for k in unknown for m in difflib.get_close_matches(k, list(known), n=1, cutoff=0.75)})
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        out["_unknown"] = [f"{len(unknown)} field(s) that this object does not have{hint} (see /api/v1/openapi.json)"]
    return out


def query_int(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number", {name: ["not a whole number"]}) from None


def query_choice(name: str, choices: Iterable[str]) -> str | None:
    """An optional filter that must be one of `choices`: a typo gives 422, not a silently empty list.
    Sent empty (`?status=`) is a value too, and not one of them: 422, not the unfiltered list."""
    raw = request.args.get(name)
    if raw is None:
        return None
    allowed = list(choices)
    if raw not in allowed:
        raise ValidationFailed(f"{name} is not one of the known values", {name: [f"one of {', '.join(allowed)}"]})
    return raw


class MalformedJson(ValidationFailed):
    status = 400
    code = "malformed_json"


from referral_service.api import (  # noqa: E402,F401  (registers routes)
    assignments,
    audit,
    deliveries,
    duplicates,
    ops,
    referrals,
    reports,
)
