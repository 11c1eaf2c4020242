from __future__ import annotations

import json
from pathlib import Path

from referral_service.domain.model import PARTNER_FIELDS
from referral_service.services.hsds import looks_like_hsds, partners_from_hsds
from schemas import PartnerSchema

DATA = Path(__file__).resolve().parents[1] / "data" / "hsds_organizations.json"


def test_hsds_organizations_become_partners_with_mapped_services_and_areas() -> None:
    orgs = json.loads(DATA.read_text())
    assert looks_like_hsds(orgs)
    partners, warnings = partners_from_hsds(orgs, capacity=7)
    assert len(partners) == 1
    p = PartnerSchema().load(partners[0])
    assert p["id"] == "org-1"
    assert p["services"] == ["medical", "psychosocial"]
    assert p["districts"] == ["Bannu", "Lakki Marwat"]
    assert p["provinces"] == ["Khyber Pakhtunkhwa"]
    assert p["languages"] == ["ps", "ur"]
    assert p["capacity"] == 7
    assert p["accepts_minors"] is True
    assert any("Boat repair" in w for w in warnings)
    assert any("Gwadar Fishermen Cooperative" in w and "skipped" in w for w in warnings)


def test_plain_partner_lists_are_not_mistaken_for_hsds() -> None:
    assert not looks_like_hsds([{"id": "x", "services": ["medical"]}])
    assert not looks_like_hsds([])


def test_a_partner_object_is_told_from_hsds_by_the_directorys_own_fields() -> None:
    from referral_service.services.hsds import is_partner_object
    from tests.factories import partner

    # The one list of a partner's fields is the API schema's, and every one of them marks our own format.
    assert {"id", *PARTNER_FIELDS} == set(PartnerSchema().fields)
    full = partner(contact_email="intake@example.org", notify_language="ur")
    assert set(full) == set(PartnerSchema().fields), "the factory gives every field of the schema"
    assert is_partner_object(full)
    assert not is_partner_object({**full, "organization_id": "x"}), "a key of HSDS's, not ours"
