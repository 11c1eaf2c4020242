"""marshmallow schemas: request validation and every role's response shape (also the OpenAPI source)."""

from schemas.duplicates import (
    DuplicateDecisionResultSchema,
    DuplicateDecisionSchema,
    DuplicatePageSchema,
    DuplicateSchema,
    DuplicateSideSchema,
)
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
    "DuplicateDecisionResultSchema",
    "DuplicateDecisionSchema",
    "DuplicatePageSchema",
    "DuplicateSchema",
    "DuplicateSideSchema",
    "ErrorSchema",
    "FollowUpSchema",
    "PartnerSchema",
    "ReferralInputSchema",
    "ReferralSchema",
    "SubmittedSchema",
]
