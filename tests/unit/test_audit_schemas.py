"""The auditors' filters and the CSV export, without a database."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from referral_service.audit.log import AuditFilter
from schemas.audit import CSV_COLUMNS, AuditQuerySchema, audit_csv, audit_filter, csv_cell


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    for value in ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(value) == "'" + value
    assert csv_cell("referral.read") == "referral.read" and csv_cell("a=b") == "a=b"
    assert csv_cell(None) == "" and csv_cell(True) == "true" and csv_cell(3) == "3"
    assert csv_cell({"fields": ["full_name"], "q": "=1"}) == '{"fields":["full_name"],"q":"=1"}'


def test_the_csv_has_the_header_and_one_quoted_row_per_entry() -> None:
    entry = {
        "id": "e1",
        "at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        "index": 0,
        "leaf_hash": "+abc=",
        "actor_id": "u1",
        "role": "auditor",
        "partner_id": None,
        "action": "audit.read",
        "referral_id": None,
        "subject_id": None,
        "outcome": "allowed",
        "request_id": "-req-000001",
        "purpose": None,
        "details": {"fields": [], "actor_id": '=HYPERLINK("http://x","y")'},
        "details_erased": False,
        "damaged": False,
    }
    text = audit_csv([entry])
    assert text.endswith("\r\n")
    header, row = list(csv.reader(io.StringIO(text)))
    assert tuple(header) == CSV_COLUMNS
    record = dict(zip(CSV_COLUMNS, row, strict=True))
    assert record["leaf_hash"] == "'+abc=" and record["request_id"] == "'-req-000001"
    assert record["at"] == "2026-12-01T10:00:00+00:00" and record["partner_id"] == ""
    assert record["details"].startswith("{") and "HYPERLINK" in record["details"]


def test_filters_load_into_the_logs_filter_and_a_time_without_offset_is_utc() -> None:
    args = AuditQuerySchema().load({"referral_id": "r1", "since": "2026-12-01T10:00", "limit": "5"})
    assert audit_filter(args) == AuditFilter(referral_id="r1", since=datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    assert args["limit"] == 5


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"since": "2026-12-02T00:00Z", "until": "2026-12-01T00:00Z"}, "until"),
        ({"action": "Referral.Read"}, "action"),
        ({"action": "=cmd|x"}, "action"),
        ({"actor_id": ""}, "actor_id"),
        ({"limit": "201"}, "limit"),
        ({"actor": "u1"}, "actor"),
    ],
)
def test_a_filter_that_is_not_one_the_log_knows_is_refused(given: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AuditQuerySchema().load(given)
    assert field in caught.value.messages
