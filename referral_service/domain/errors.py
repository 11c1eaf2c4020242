"""Domain exceptions; the HTTP layer maps each to one status code and error code."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ValidationFailed(DomainError):
    status = 422
    code = "validation_failed"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class RecordDamaged(Conflict):
    """The person's stored data key does not open: nothing new can be sealed for them."""

    code = "damaged_record"


class PersonErased(Conflict):
    """The person's data key was destroyed on request (erasure): nothing new about them can be stored."""

    code = "subject_erased"
