"""Possible duplicate people: how confirmed links join into one person.

A CNIC or phone that matches an earlier subject is a question for supervisors, never an automatic
link: each referral keeps the person as its own caseworker entered them. Who may learn of a match is
the access policy's `Action.LEARN_OF_MATCH` (`domain/access.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class DuplicateStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


def merged_person(groups: Iterable[str | None], fresh: str) -> tuple[str, frozenset[str]]:
    """The person id both sides of a confirmed pair get, and the existing groups folded into it.

    Linking is transitive: if either side already belongs to a person, every subject of both
    groups ends up with one id. The smallest existing id wins, so the answer does not depend on
    which side of the pair is which; `fresh` is used only when neither side has one yet.
    """
    existing = frozenset(g for g in groups if g)
    return (min(existing) if existing else fresh), existing
