"""marshmallow schemas: request validation and every role's response shape (also the OpenAPI source)."""

from schemas.errors import ErrorSchema
from schemas.partners import PartnerSchema
from schemas.referrals import (
    AssignmentSchema,
    CloseSchema,
    DeclineSchema,
    FollowUpSchema,
    ReferralInputSchema,
    ReferralSchema,
    SubmittedSchema,
)

__all__ = [
    "AssignmentSchema",
    "CloseSchema",
    "DeclineSchema",
    "ErrorSchema",
    "FollowUpSchema",
    "PartnerSchema",
    "ReferralInputSchema",
    "ReferralSchema",
    "SubmittedSchema",
]
