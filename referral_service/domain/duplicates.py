"""Possible duplicate people: who may learn of a match, and how confirmed links join into one person.

A CNIC or phone that matches an earlier subject is a question for supervisors, never an automatic
link: each referral keeps the person as its own caseworker entered them.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from referral_service.domain.model import Actor, Role


class DuplicateStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


def may_learn_of(actor: Actor, caseworker_id: str) -> bool:
    """Whether telling `actor` that a referral matched reveals nothing they could not already see.

    The same rule as reading the referral: its own caseworker, or any supervisor. Anyone else
    (another caseworker, above all) must get an answer identical to "no match", or intake becomes
    an oracle for "has this CNIC been referred as a victim?".
    """
    return actor.role == Role.SUPERVISOR or (actor.role == Role.CASEWORKER and actor.user_id == caseworker_id)


def merged_person(groups: Iterable[str | None], fresh: str) -> tuple[str, frozenset[str]]:
    """The person id both sides of a confirmed pair get, and the existing groups folded into it.

    Linking is transitive: if either side already belongs to a person, every subject of both
    groups ends up with one id. The smallest existing id wins, so the answer does not depend on
    which side of the pair is which; `fresh` is used only when neither side has one yet.
    """
    existing = frozenset(g for g in groups if g)
    return (min(existing) if existing else fresh), existing
