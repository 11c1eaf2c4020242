"""The routing policy on its own: hard filters, scoring, ties and the reasons it gives."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from referral_service.domain.routing import CaseProfile, PartnerProfile, RoutingPolicy, route_referral


def case(**overrides: Any) -> CaseProfile:
    base = CaseProfile(
        referral_id="r-1",
        service="medical",
        province="Khyber Pakhtunkhwa",
        district="Peshawar",
        language="ps",
        is_minor=False,
        staff_sex_preference="any",
    )
    return replace(base, **overrides)


def partner(pid: str, **overrides: Any) -> PartnerProfile:
    base = PartnerProfile(
        id=pid,
        name=pid.title(),
        services=("medical", "psychosocial"),
        provinces=("Khyber Pakhtunkhwa",),
        districts=("Peshawar",),
        languages=("ps", "ur"),
        capacity=10,
        open_assignments=0,
        accepts_minors=True,
        staff_sex=("female", "male"),
        active=True,
    )
    return replace(base, **overrides)


def verdicts(result: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {c.partner_id: (c.verdict, c.reasons) for c in result.considered}


def test_single_eligible_partner_is_chosen_with_readable_reasons() -> None:
    result = route_referral(case(), [partner("p-a")], set())
    assert result.chosen is not None and result.chosen.id == "p-a"
    assert result.chosen_reasons == ["active", "offers medical", "covers Peshawar", "load 0/10", "speaks Pashto"]


def test_minor_is_never_offered_to_a_partner_that_does_not_accept_minors() -> None:
    partners = [partner("p-adults", accepts_minors=False), partner("p-youth", accepts_minors=True)]
    result = route_referral(case(is_minor=True), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-youth"
    assert verdicts(result)["p-adults"] == ("skipped", ("does not accept minors",))
    assert "accepts minors" in result.chosen_reasons


def test_adult_may_go_to_a_partner_that_does_not_accept_minors() -> None:
    result = route_referral(case(is_minor=False), [partner("p-adults", accepts_minors=False)], set())
    assert result.chosen is not None and result.chosen.id == "p-adults"
    assert "accepts minors" not in result.chosen_reasons


def test_unknown_age_is_not_treated_as_minor() -> None:
    result = route_referral(case(is_minor=None), [partner("p-adults", accepts_minors=False)], set())
    assert result.chosen is not None


def test_female_staff_preference_skips_partners_without_female_staff() -> None:
    partners = [partner("p-men", staff_sex=("male",)), partner("p-women", staff_sex=("female",))]
    result = route_referral(case(staff_sex_preference="female"), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-women"
    assert verdicts(result)["p-men"] == ("skipped", ("no female staff",))
    assert "has female staff" in result.chosen_reasons


def test_any_staff_preference_accepts_every_partner() -> None:
    result = route_referral(case(staff_sex_preference="any"), [partner("p-men", staff_sex=("male",))], set())
    assert result.chosen is not None and result.chosen.id == "p-men"


def test_partner_at_capacity_is_skipped_with_its_load() -> None:
    partners = [partner("p-full", capacity=3, open_assignments=3), partner("p-free", capacity=3, open_assignments=2)]
    result = route_referral(case(), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-free"
    assert verdicts(result)["p-full"] == ("skipped", ("at capacity 3/3",))
    assert "load 2/3" in result.chosen_reasons


def test_zero_capacity_partner_never_gets_a_case() -> None:
    result = route_referral(case(), [partner("p-zero", capacity=0)], set())
    assert result.chosen is None
    assert verdicts(result)["p-zero"] == ("skipped", ("at capacity 0/0",))


def test_district_partner_beats_province_fallback() -> None:
    partners = [partner("p-province", districts=("Mardan",)), partner("p-district", districts=("Peshawar",))]
    result = route_referral(case(), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-district"
    assert verdicts(result)["p-province"][0] == "eligible"


def test_province_fallback_when_no_partner_covers_the_district() -> None:
    partners = [
        partner("p-mardan", districts=("Mardan",)),
        partner("p-quetta", provinces=("Balochistan",), districts=("Quetta",)),
    ]
    result = route_referral(case(), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-mardan"
    assert "covers Khyber Pakhtunkhwa (not Peshawar itself)" in result.chosen_reasons
    assert verdicts(result)["p-quetta"] == ("skipped", ("does not cover Peshawar",))


def test_partner_covering_a_whole_province_says_so() -> None:
    result = route_referral(case(), [partner("p-kp", districts=())], set())
    assert result.chosen is not None
    assert "covers all of Khyber Pakhtunkhwa" in result.chosen_reasons


def test_district_match_is_case_insensitive() -> None:
    result = route_referral(case(district="peshawar", province="khyber pakhtunkhwa"), [partner("p-a")], set())
    assert result.chosen is not None
    assert "covers peshawar" in result.chosen_reasons


def test_inactive_partner_is_skipped() -> None:
    result = route_referral(case(), [partner("p-closed", active=False)], set())
    assert result.chosen is None
    assert verdicts(result)["p-closed"] == ("skipped", ("inactive",))


def test_partner_not_offering_the_service_is_skipped() -> None:
    result = route_referral(case(service="legal_aid"), [partner("p-med")], set())
    assert result.chosen is None
    assert verdicts(result)["p-med"] == ("skipped", ("does not offer legal_aid",))


def test_partner_already_tried_for_this_referral_is_skipped() -> None:
    partners = [partner("p-a"), partner("p-b")]
    first = route_referral(case(), partners, set())
    assert first.chosen is not None
    second = route_referral(case(), partners, {first.chosen.id})
    assert second.chosen is not None and second.chosen.id != first.chosen.id
    assert verdicts(second)[first.chosen.id] == ("skipped", ("already offered this case",))
    assert route_referral(case(), partners, {"p-a", "p-b"}).chosen is None


def test_language_match_outweighs_a_little_spare_capacity() -> None:
    partners = [
        partner("p-urdu-only", languages=("ur",), open_assignments=0),
        partner("p-pashto", languages=("ps",), open_assignments=3),
    ]
    result = route_referral(case(language="ps"), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-pashto"
    assert "speaks Pashto" in result.chosen_reasons


def test_lower_load_wins_when_all_else_is_equal() -> None:
    partners = [partner("p-busy", open_assignments=8), partner("p-quiet", open_assignments=1)]
    result = route_referral(case(), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-quiet"


def test_past_acceptance_rate_counts_and_is_explained() -> None:
    partners = [
        partner("p-rarely", offers_made=10, offers_accepted=1),
        partner("p-usually", offers_made=10, offers_accepted=9),
    ]
    result = route_referral(case(), partners, set())
    assert result.chosen is not None and result.chosen.id == "p-usually"
    assert "accepts 90% of offers" in result.chosen_reasons


def test_ties_are_broken_by_partner_id_whatever_the_input_order() -> None:
    a, b, c = partner("p-b"), partner("p-a"), partner("p-c")
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        result = route_referral(case(), order, set())
        assert result.chosen is not None and result.chosen.id == "p-a"
        assert [x.partner_id for x in result.considered if x.verdict != "skipped"] == ["p-a", "p-b", "p-c"]


def test_no_eligible_partner_gives_no_choice_and_a_reason_for_each() -> None:
    partners = [
        partner("p-closed", active=False),
        partner("p-full", capacity=1, open_assignments=1),
        partner("p-far", provinces=("Sindh",), districts=("Karachi",)),
    ]
    result = route_referral(case(), partners, set())
    assert result.chosen is None and result.chosen_reasons == []
    assert {c.partner_id: c.reasons for c in result.considered} == {
        "p-closed": ("inactive",),
        "p-full": ("at capacity 1/1",),
        "p-far": ("does not cover Peshawar",),
    }


def test_every_considered_partner_is_reported_in_json_for_storage() -> None:
    result = route_referral(case(), [partner("p-a"), partner("p-b", active=False)], set())
    stored = [c.to_json() for c in result.considered]
    assert {s["partner_id"] for s in stored} == {"p-a", "p-b"}
    assert all(isinstance(r, str) and r for s in stored for r in s["reasons"])  # type: ignore[union-attr]
    chosen = next(s for s in stored if s["verdict"] == "chosen")
    assert isinstance(chosen["score"], float)


def test_reasons_name_no_personal_data_only_places_services_and_load() -> None:
    result = route_referral(case(), [partner("p-a")], set())
    text = " ".join(r for c in result.considered for r in c.reasons)
    assert "r-1" not in text  # the referral id is not a reason either


def test_policy_weights_are_data() -> None:
    partners = [
        partner("p-speaks", languages=("ps",), open_assignments=9),
        partner("p-spare", languages=("ur",), open_assignments=0),
    ]
    default = route_referral(case(), partners, set())
    capacity_first = RoutingPolicy(
        weights={
            "exact_district": 2.0,
            "language": 0.0,
            "spare_capacity": 10.0,
            "acceptance_rate": 0.0,
            "fast_response": 0.0,
        }
    )
    reweighted = route_referral(case(), partners, set(), capacity_first)
    assert default.chosen is not None and default.chosen.id == "p-speaks"
    assert reweighted.chosen is not None and reweighted.chosen.id == "p-spare"
