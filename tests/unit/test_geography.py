"""Pakistan place names: matching, inference and the errors a form field gets back."""

from __future__ import annotations

import pytest

from referral_service.domain import geography
from referral_service.domain.geography import Place, UnknownPlace, districts, provinces, resolve_place

EXPECTED_PROVINCES = {
    "Punjab",
    "Sindh",
    "Khyber Pakhtunkhwa",
    "Balochistan",
    "Islamabad Capital Territory",
    "Gilgit-Baltistan",
    "Azad Jammu and Kashmir",
}


def test_lists_the_seven_provinces_and_territories_sorted():
    assert set(provinces()) == EXPECTED_PROVINCES
    assert provinces() == sorted(provinces())


@pytest.mark.parametrize("province", sorted(EXPECTED_PROVINCES))
def test_every_province_has_sorted_unique_districts(province):
    names = districts(province)
    assert names
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_islamabad_capital_territory_has_the_one_district():
    assert districts("Islamabad Capital Territory") == ["Islamabad"]


def test_all_districts_is_the_sorted_union():
    everything = districts()
    assert everything == sorted(everything)
    assert set(everything) == {d for p in provinces() for d in districts(p)}


@pytest.mark.parametrize(
    ("district", "province"),
    [
        ("Peshawar", "Khyber Pakhtunkhwa"),
        ("Quetta", "Balochistan"),
        ("Lahore", "Punjab"),
        ("Karachi Central", "Sindh"),
        ("Karachi East", "Sindh"),
        ("Karachi South", "Sindh"),
        ("Karachi West", "Sindh"),
        ("Korangi", "Sindh"),
        ("Malir", "Sindh"),
        ("Keamari", "Sindh"),
        ("Islamabad", "Islamabad Capital Territory"),
        ("Khyber", "Khyber Pakhtunkhwa"),
        ("North Waziristan", "Khyber Pakhtunkhwa"),
        ("Bajaur", "Khyber Pakhtunkhwa"),
        ("Gilgit", "Gilgit-Baltistan"),
        ("Muzaffarabad", "Azad Jammu and Kashmir"),
    ],
)
def test_infers_the_province_of_a_known_district(district, province):
    assert resolve_place(None, district) == Place(province, district)
    assert resolve_place("", district) == Place(province, district)
    assert district in districts(province)


def test_matching_ignores_case_and_spacing():
    assert resolve_place("  khyber   PAKHTUNKHWA ", "  peshawar\t") == Place("Khyber Pakhtunkhwa", "Peshawar")
    assert resolve_place(None, "dera   ghazi khan") == Place("Punjab", "Dera Ghazi Khan")
    assert resolve_place("gilgit baltistan", "GUPIS yasin") == Place("Gilgit-Baltistan", "Gupis-Yasin")
    assert resolve_place("Azad Jammu & Kashmir", "mirpur") == Place("Azad Jammu and Kashmir", "Mirpur")


def test_district_outside_the_named_province_flags_the_district():
    with pytest.raises(UnknownPlace) as caught:
        resolve_place("Punjab", "Peshawar")
    assert caught.value.field == "district"
    assert caught.value.message == "Peshawar is not a district of Punjab"


def test_unknown_district_is_refused_without_echoing_the_input():
    with pytest.raises(UnknownPlace) as caught:
        resolve_place("Punjab", "Ayesha Khan 0300-1234567")
    assert caught.value.field == "district"
    assert "Ayesha" not in caught.value.message
    assert "0300" not in caught.value.message


def test_empty_district_is_refused():
    with pytest.raises(UnknownPlace) as caught:
        resolve_place("Sindh", "   ")
    assert caught.value.field == "district"


def test_unknown_province_is_refused():
    with pytest.raises(UnknownPlace) as caught:
        resolve_place("Narnia", "Lahore")
    assert caught.value.field == "province"
    assert "Narnia" not in caught.value.message
    with pytest.raises(UnknownPlace) as caught:
        districts("Narnia")
    assert caught.value.field == "province"


def test_district_named_in_two_provinces_needs_the_province(monkeypatch):
    data = {
        "source": "test",
        "provinces": [
            {"name": "Alpha", "districts": ["Shared", "Only Alpha"]},
            {"name": "Beta", "districts": ["Shared"]},
        ],
    }
    monkeypatch.setattr(geography, "_index", lambda: geography._build_index(data))
    with pytest.raises(UnknownPlace) as caught:
        resolve_place(None, "shared")
    assert caught.value.field == "province"
    assert caught.value.message == "district exists in several provinces; name the province"
    assert resolve_place("beta", "SHARED") == Place("Beta", "Shared")
    assert districts() == ["Only Alpha", "Shared"]


def test_returned_lists_are_copies():
    provinces().clear()
    districts("Punjab").clear()
    assert provinces()
    assert districts("Punjab")
