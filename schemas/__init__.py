"""marshmallow schemas: request validation and every role's response shape (also the OpenAPI source)."""

from schemas.deadlines import DeadlinePolicySchema, OverdueDeadlineSchema, OverduePageSchema, RiskDeadlinesSchema
from schemas.duplicates import (
    DuplicateDecisionResultSchema,
    DuplicateDecisionSchema,
    DuplicatePageSchema,
    DuplicateSchema,
    DuplicateSideSchema,
)
from schemas.errors import ErrorSchema
from schemas.ops import HealthSchema, ReadinessSchema
from schemas.partners import PartnerPageSchema, PartnerSchema, PartnerViewSchema
from schemas.referrals import (
    AssignmentDetailSchema,
    AssignmentPageSchema,
    AssignmentSchema,
    CloseSchema,
    ConsentWithdrawnSchema,
    DeclineSchema,
    FollowUpRecordedSchema,
    FollowUpSchema,
    ReferralInputSchema,
    ReferralPageSchema,
    ReferralSchema,
    ReferralStateSchema,
    ReopenSchema,
    SubmittedSchema,
    WithdrawSchema,
)
from schemas.reports import SlaReportSchema, SlaRowSchema, StatisticsCellSchema, StatisticsSchema

__all__ = [
    "AssignmentDetailSchema",
    "AssignmentPageSchema",
    "AssignmentSchema",
    "CloseSchema",
    "ConsentWithdrawnSchema",
    "DeadlinePolicySchema",
    "DeclineSchema",
    "DuplicateDecisionResultSchema",
    "DuplicateDecisionSchema",
    "DuplicatePageSchema",
    "DuplicateSchema",
    "DuplicateSideSchema",
    "ErrorSchema",
    "FollowUpRecordedSchema",
    "FollowUpSchema",
    "HealthSchema",
    "OverdueDeadlineSchema",
    "OverduePageSchema",
    "PartnerPageSchema",
    "PartnerSchema",
    "PartnerViewSchema",
    "ReadinessSchema",
    "ReferralInputSchema",
    "ReferralPageSchema",
    "ReferralSchema",
    "ReferralStateSchema",
    "ReopenSchema",
    "RiskDeadlinesSchema",
    "SlaReportSchema",
    "SlaRowSchema",
    "StatisticsCellSchema",
    "StatisticsSchema",
    "SubmittedSchema",
    "WithdrawSchema",
]
