"""The rules behind possible duplicates: who may learn of a match, and how confirmed links merge."""

from __future__ import annotations

import pytest

from referral_service.domain.access import Action, Case, decide
from referral_service.domain.duplicates import merged_person
from referral_service.domain.model import Actor, Role


@pytest.mark.parametrize(
    ("actor", "allowed"),
    [
        (Actor("cw-a", Role.CASEWORKER), True),  # the earlier referral's own caseworker
        (Actor("cw-b", Role.CASEWORKER), False),  # anyone else's client stays unknown to them
        (Actor("sup", Role.SUPERVISOR), True),
        (Actor("cw-a", Role.PARTNER, "p-1"), False),  # the same id in another role is not the caseworker
        (Actor("aud", Role.AUDITOR), False),
        (Actor("adm", Role.ADMIN), False),
    ],
)
def test_only_the_earlier_referrals_caseworker_or_a_supervisor_learns_of_a_match(actor: Actor, allowed: bool) -> None:
    earlier = Case(caseworker_id="cw-a", consent_given=True)
    assert decide(actor, Action.LEARN_OF_MATCH, earlier).allowed is allowed


def test_two_unlinked_people_get_the_fresh_person_id() -> None:
    assert merged_person([None, None], "fresh") == ("fresh", frozenset())


def test_joining_a_linked_person_keeps_their_group() -> None:
    assert merged_person(["g1", None], "fresh") == ("g1", frozenset({"g1"}))
    assert merged_person([None, "g1"], "fresh") == ("g1", frozenset({"g1"}))


def test_two_groups_merge_into_one_whichever_side_is_which() -> None:
    assert (
        merged_person(["g2", "g1"], "fresh") == merged_person(["g1", "g2"], "fresh") == ("g1", frozenset({"g1", "g2"}))
    )
    assert merged_person(["g1", "g1"], "fresh") == ("g1", frozenset({"g1"}))
