"""Which partner gets a case: hard filters, then a score. Policy is data (`RoutingPolicy`).

`route_referral` is pure: it takes a case profile and candidate profiles and returns the choice
with a readable reason for every partner considered, so the decision can be stored and shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LANGUAGE_NAMES = {
    "ur": "Urdu",
    "ps": "Pashto",
    "en": "English",
    "pa": "Punjabi",
    "sd": "Sindhi",
    "bal": "Balochi",
    "skr": "Saraiki",
    "hnd": "Hindko",
    "bsk": "Burushaski",
    "shi": "Shina",
    "kas": "Kashmiri",
    "brh": "Brahui",
}


@dataclass(frozen=True)
class CaseProfile:
    referral_id: str
    service: str
    province: str
    district: str
    language: str | None
    is_minor: bool | None
    staff_sex_preference: str  # female | male | any


@dataclass(frozen=True)
class PartnerProfile:
    id: str
    name: str
    services: Sequence[str]
    provinces: Sequence[str]
    districts: Sequence[str]
    languages: Sequence[str]
    capacity: int
    open_assignments: int
    accepts_minors: bool
    staff_sex: Sequence[str]
    active: bool
    offers_made: int = 0
    offers_accepted: int = 0
    mean_response_hours: float | None = None


@dataclass(frozen=True)
class Considered:
    partner_id: str
    verdict: str  # chosen | eligible | skipped
    reasons: tuple[str, ...]
    score: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "partner_id": self.partner_id,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "score": self.score,
        }


@dataclass(frozen=True)
class RoutingResult:
    chosen: PartnerProfile | None
    considered: tuple[Considered, ...]

    @property
    def chosen_reasons(self) -> list[str]:
        for c in self.considered:
            if c.verdict == "chosen":
                return list(c.reasons)
        return []


def _covers(partner: PartnerProfile, case: CaseProfile) -> tuple[bool, str]:
    districts = {d.casefold() for d in partner.districts}
    if case.district.casefold() in districts:
        return True, f"covers {case.district}"
    if not districts and case.province.casefold() in {p.casefold() for p in partner.provinces}:
        return True, f"covers all of {case.province}"
    if case.province.casefold() in {p.casefold() for p in partner.provinces}:
        return True, f"covers {case.province} (not {case.district} itself)"
    return False, f"does not cover {case.district}"


Filter = Callable[[PartnerProfile, CaseProfile], tuple[bool, str]]


def _active(p: PartnerProfile, c: CaseProfile) -> tuple[bool, str]:
    return p.active, "active" if p.active else "inactive"


def _service(p: PartnerProfile, c: CaseProfile) -> tuple[bool, str]:
    ok = c.service in p.services
    return ok, f"offers {c.service}" if ok else f"does not offer {c.service}"


def _minors(p: PartnerProfile, c: CaseProfile) -> tuple[bool, str]:
    if not c.is_minor:
        return True, ""
    return p.accepts_minors, "accepts minors" if p.accepts_minors else "does not accept minors"


def _staff_sex(p: PartnerProfile, c: CaseProfile) -> tuple[bool, str]:
    if c.staff_sex_preference in ("any", "", None):
        return True, ""
    ok = c.staff_sex_preference in p.staff_sex
    return ok, (f"has {c.staff_sex_preference} staff" if ok else f"no {c.staff_sex_preference} staff")


def _capacity(p: PartnerProfile, c: CaseProfile) -> tuple[bool, str]:
    ok = p.open_assignments < p.capacity
    return ok, f"load {p.open_assignments}/{p.capacity}" if ok else f"at capacity {p.open_assignments}/{p.capacity}"


@dataclass(frozen=True)
class RoutingPolicy:
    """Hard filters in order (the first that fails is the reason given), then weighted scoring."""

    filters: tuple[Filter, ...] = (_active, _service, _covers, _minors, _staff_sex, _capacity)
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "exact_district": 2.0,
            "language": 3.0,
            "spare_capacity": 2.0,
            "acceptance_rate": 1.5,
            "fast_response": 1.0,
        }
    )

    def score(self, p: PartnerProfile, c: CaseProfile) -> tuple[float, list[str]]:
        w = self.weights
        notes: list[str] = []
        score = 0.0
        if c.district.casefold() in {d.casefold() for d in p.districts}:
            score += w["exact_district"]
        if c.language and c.language in p.languages:
            score += w["language"]
            notes.append(f"speaks {LANGUAGE_NAMES.get(c.language, c.language)}")
        score += w["spare_capacity"] * (1 - p.open_assignments / max(p.capacity, 1))
        if p.offers_made:
            rate = p.offers_accepted / p.offers_made
            score += w["acceptance_rate"] * rate
            notes.append(f"accepts {rate:.0%} of offers")
        if p.mean_response_hours is not None:
            score += w["fast_response"] / (1 + p.mean_response_hours)
        return round(score, 4), notes


DEFAULT_POLICY = RoutingPolicy()


def route_referral(
    case: CaseProfile,
    partners: Sequence[PartnerProfile],
    already_tried: set[str],
    policy: RoutingPolicy = DEFAULT_POLICY,
) -> RoutingResult:
    considered: list[Considered] = []
    eligible: list[tuple[float, str, PartnerProfile, list[str]]] = []
    for partner in partners:
        if partner.id in already_tried:
            considered.append(Considered(partner.id, "skipped", ("already offered this case",)))
            continue
        reasons: list[str] = []
        failed = None
        for check in policy.filters:
            ok, why = check(partner, case)
            if not ok:
                failed = why
                break
            if why:
                reasons.append(why)
        if failed is not None:
            considered.append(Considered(partner.id, "skipped", (failed,)))
            continue
        score, notes = policy.score(partner, case)
        eligible.append((score, partner.id, partner, reasons + notes))
    # Highest score first; the partner id breaks ties so a decision is reproducible.
    eligible.sort(key=lambda e: (-e[0], e[1]))
    chosen = eligible[0][2] if eligible else None
    for i, (score, pid, _p, reasons) in enumerate(eligible):
        considered.append(Considered(pid, "chosen" if i == 0 else "eligible", tuple(reasons), score))
    return RoutingResult(chosen, tuple(considered))


__all__ = ["CaseProfile", "PartnerProfile", "RoutingPolicy", "route_referral"]
