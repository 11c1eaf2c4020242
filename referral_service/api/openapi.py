"""The OpenAPI 3 document, generated from the routes registered on the app and the marshmallow schemas.

Each view of the `api` and `ops` blueprints says, once and next to its route, what it takes and answers:

    @bp.post("/referrals/<referral_id>/reopen")
    @operation("Re-open a withdrawn or unroutable referral", body=ReopenSchema, response=ReferralStateSchema,
               errors={403: "...", 409: "..."})
    def reopen_referral(referral_id: str) -> Any: ...

`build_spec(app)` walks `app.url_map`: every rule of those blueprints becomes a path (Flask's `<name>` is
OpenAPI's `{name}`), each of its methods an operation built from the view's declaration. The error
answers that follow from an operation's shape are added for it (401 with a bearer token, 404 with an id
in the path, 400/413/422 with a body, 422 with query parameters, 429 on the rate-limited API, 503 when
the database is down), each with the one error body `{"error": {"code", "message", "fields"}}`; the
view names the rest (403, 409).
A route without a declaration is left out of the document, and tests/e2e/test_openapi_document.py
fails on it.

The declaration is also what answers: `operation` wraps the view, which returns plain data (a dict, a
dataclass, a row) or `(data, status)`, and the declared response schema dumps it (`Operation.answer`).
So the document and the body cannot drift: a field the schema does not name never reaches a client,
and datetimes are written as the schema's fields write them (ISO 8601 with the offset).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls
from flask import Flask, Response, jsonify
from marshmallow import Schema
from werkzeug.routing import Rule

from referral_service import __version__
from referral_service.app import MAX_BODY_BYTES
from referral_service.services.common import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT
from schemas import ErrorSchema, PartnerSchema, PartnerViewSchema

DOCUMENTED_BLUEPRINTS = ("api", "ops")
OPERATION_ATTRIBUTE = "openapi_operation"
_EXTENSION = "referral_openapi"
_UNDOCUMENTED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Werkzeug answers these for every rule
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
JSON = "application/json"
# Input and output of the partner directory differ; every other component is its class name less "Schema".
_COMPONENT_NAMES: dict[type[Schema], str] = {PartnerSchema: "PartnerInput", PartnerViewSchema: "Partner"}
_NOUNS = {"duplicate_id": "possible duplicate"}

Security = Literal["bearer", "metrics", "none"]
View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """What one view takes and answers; `operation(...)` attaches it to the view."""

    summary: str
    # The success body: a marshmallow schema, or a plain OpenAPI schema for what is not JSON from a schema.
    response: type[Schema] | dict[str, Any] | None = None
    status: int = 200
    body: type[Schema] | None = None
    body_required: bool = True
    parameters: tuple[dict[str, Any], ...] = ()
    # Error statuses this operation answers beyond those that follow from its shape, with when.
    errors: Mapping[int, str] = field(default_factory=dict)
    # Other answers that are not errors (a readiness check that fails): status -> (when, schema).
    others: Mapping[int, tuple[str, type[Schema]]] = field(default_factory=dict)
    security: Security = "bearer"
    media_type: str = JSON
    description: str | None = None

    def schema_for(self, status: int) -> type[Schema] | dict[str, Any] | None:
        """The schema of the answer with this status: the success one, or one of `others`."""
        if status == self.status:
            return self.response
        if status in self.others:
            return self.others[status][1]
        raise TypeError(f"{self.summary!r} answered {status}, which its operation does not declare")

    def answer(self, result: Any) -> Any:
        """The HTTP answer for what the view returned: `data` or `(data, status)`, dumped by its schema."""
        if isinstance(result, Response):
            # Only what is not JSON (the metrics' text) is built by the view itself.
            if self.media_type == JSON:
                raise TypeError(f"{self.summary!r} returned a Response: return the data for its schema to dump")
            return result
        data, status = result if isinstance(result, tuple) else (result, self.status)
        schema = self.schema_for(status)
        if isinstance(schema, type) and issubclass(schema, Schema):
            data = _dumper(schema).dump(data)  # only the schema's fields, written as its fields write them
        elif schema is None:
            raise TypeError(f"{self.summary!r} declares no response body but returned one")
        return jsonify(data), status


@functools.cache
def _dumper(schema: type[Schema]) -> Schema:
    return schema()  # a schema holds no state between dumps: one instance per class serves every request


def operation(summary: str, **details: Any) -> Callable[[View], View]:
    """Declare a view's operation (see `Operation`), next to its route: the OpenAPI document describes
    it, and its response schema dumps what the view returns."""
    op = Operation(summary, **details)

    def declare(view: View) -> View:
        @functools.wraps(view)
        def answered(*args: Any, **kwargs: Any) -> Any:
            return op.answer(view(*args, **kwargs))

        setattr(answered, OPERATION_ATTRIBUTE, op)
        return answered  # type: ignore[return-value]

    return declare


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def choice(name: str, values: Iterable[str], description: str, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": [str(v) for v in values]}
    if default is not None:
        schema["default"] = default
    return query(name, schema, description)


PAGE = (
    query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "how many items at most",
    ),
    query("cursor", {"type": "string", "maxLength": MAX_CURSOR_CHARS}, "the `next` of the previous page"),
)


def openapi_path(rule: str) -> str:
    """`/referrals/<referral_id>` (Flask) → `/referrals/{referral_id}` (OpenAPI)."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def documented_rules(app: Flask) -> list[Rule]:
    """The app's rules that the document must describe: those of the API and operations blueprints."""
    return [
        r
        for r in app.url_map.iter_rules()
        if r.endpoint.partition(".")[0] in DOCUMENTED_BLUEPRINTS and "." in r.endpoint
    ]


def documented_methods(rule: Rule) -> list[str]:
    return sorted((rule.methods or set()) - _UNDOCUMENTED_METHODS)


def build_spec(app: Flask) -> dict[str, Any]:
    """The document for this app, built once (the routes do not change after start-up)."""
    doc: dict[str, Any] | None = app.extensions.get(_EXTENSION)
    if doc is None:
        doc = app.extensions[_EXTENSION] = _build(app)
    return doc


def _schema_name(schema: Any) -> str:
    cls = resolve_schema_cls(schema)
    if isinstance(cls, list):  # a schema named by a string that several classes share
        raise TypeError(f"ambiguous schema name {schema!r}")
    return _COMPONENT_NAMES.get(cls) or cls.__name__.removesuffix("Schema")


def _build(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="referral-service",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={"description": "Victim Assistance Network referrals"},
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "a token from `referral-service users create`"}
    )
    spec.components.security_scheme(
        "metricsToken", {"type": "http", "scheme": "bearer", "description": "REFERRAL_METRICS_TOKEN"}
    )
    spec.components.schema("Error", schema=ErrorSchema)
    paths: dict[str, dict[str, Any]] = {}
    parameters: dict[str, list[dict[str, Any]]] = {}
    for rule in sorted(documented_rules(app), key=lambda r: r.rule):
        op: Operation | None = getattr(app.view_functions[rule.endpoint], OPERATION_ATTRIBUTE, None)
        if op is None:
            continue  # undocumented: the OpenAPI test names the route
        path = openapi_path(rule.rule)
        parameters[path] = [_path_parameter(name) for name in sorted(rule.arguments)]
        for method in documented_methods(rule):
            paths.setdefault(path, {})[method.lower()] = _operation(op, rule, path)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations, parameters=parameters[path])
    doc = spec.to_dict()
    doc["security"] = [{"bearer": []}]
    return doc


def _noun(argument: str) -> str:
    return _NOUNS.get(argument) or argument.removesuffix("_id").replace("_", " ")


def _path_parameter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"the {_noun(name)}'s id",
    }


def _errors(op: Operation, rule: Rule) -> dict[int, str]:
    """The error answers that follow from the operation's shape, then the view's own."""
    errors: dict[int, str] = {}
    if op.body is not None:
        errors[400] = "the body is not JSON, or not a JSON object"
        errors[413] = f"the body is larger than {MAX_BODY_BYTES} bytes"
        errors[422] = "the body has invalid fields (`fields` names each, with what is wrong)"
    if any(p["in"] in ("query", "header") for p in op.parameters):
        errors.setdefault(422, "a parameter is invalid (`fields` names it)")
    if op.security != "none":
        errors[401] = "no valid token in `Authorization: Bearer …`"
    if rule.arguments:
        errors[404] = "no such " + " or ".join(_noun(a) for a in sorted(rule.arguments))
    if rule.endpoint.startswith("api."):
        errors[429] = "too many failed authentications from this address; try again after `Retry-After` seconds"
        if op.security == "bearer":  # the token is looked up in the database
            errors[503] = "the database is unavailable; try again shortly"
    errors.update(op.errors)
    return errors


_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": {"description": "seconds until requests are taken again", "schema": {"type": "integer"}}},
}
_API_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'RFC 6750: `Bearer realm="referral-service"`, with '
            '`error="invalid_token"` when a token was sent',
            "schema": {"type": "string"},
        }
    },
}


def _content(media_type: str, schema: type[Schema] | dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(op: Operation, rule: Rule, path: str) -> dict[str, Any]:
    success: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        success["content"] = _content(op.media_type, op.response)
    responses: dict[str, Any] = {str(op.status): success}
    for status, (when, schema) in op.others.items():
        responses[str(status)] = {"description": when, "content": _content(JSON, schema)}
    on_api = rule.endpoint.startswith("api.")
    for status, when in sorted(_errors(op, rule).items()):
        answer: dict[str, Any] = {"description": when, "content": _content(JSON, ErrorSchema)}
        headers = {**_HEADERS.get(status, {}), **(_API_HEADERS.get(status, {}) if on_api else {})}
        if headers:
            answer["headers"] = headers
        responses[str(status)] = answer
    out: dict[str, Any] = {
        "operationId": rule.endpoint.partition(".")[2],
        "summary": op.summary,
        "tags": [_tag(path)],
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _content(JSON, op.body)}
    if op.security == "none":
        out["security"] = []
    elif op.security == "metrics":
        out["security"] = [{"metricsToken": []}]
    return out


def _tag(path: str) -> str:
    first = path.removeprefix("/api/v1/").strip("/").split("/")[0]
    return first if path.startswith("/api/v1/") and first != "openapi.json" else "operations"
