"""The Urdu catalogue is complete, consistent with the sources, and used at run time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from referral_service.web.i18n import TRANSLATIONS_DIR, compile_catalogs, translate_error

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\(\w+\)s")


def _catalog(path: Path, locale: str | None = None) -> dict[str, str]:
    with path.open("rb") as fh:
        return {str(m.id): str(m.string or "") for m in read_po(fh, locale=locale) if m.id}


def test_every_message_has_an_urdu_translation_with_the_same_placeholders() -> None:
    urdu = _catalog(TRANSLATIONS_DIR / "ur" / "LC_MESSAGES" / "messages.po", "ur")
    assert len(urdu) > 150
    untranslated = [msgid for msgid, text in urdu.items() if not text.strip()]
    assert not untranslated
    for msgid, text in urdu.items():
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(text)), msgid


def test_catalogue_template_lists_every_message_in_the_sources(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pybabel"),
            "-q",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "--no-location",
            "-o",
            str(fresh),
            ".",
        ],
        cwd=ROOT,
        check=True,
    )
    in_sources = set(_catalog(fresh))
    translated = set(_catalog(TRANSLATIONS_DIR / "ur" / "LC_MESSAGES" / "messages.po", "ur"))
    missing = in_sources - translated
    assert not missing, f"run pybabel extract/update and translate: {sorted(missing)[:5]}"


def test_stale_compiled_catalogue_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "ur" / "LC_MESSAGES"
    target.mkdir(parents=True)
    source = TRANSLATIONS_DIR / "ur" / "LC_MESSAGES" / "messages.po"
    (target / "messages.po").write_bytes(source.read_bytes())
    assert compile_catalogs(tmp_path) == [target / "messages.mo"]
    assert compile_catalogs(tmp_path) == []  # up to date: left alone


def test_schema_messages_get_a_readable_form_message() -> None:
    assert translate_error("Missing data for required field.") == "This field is required."
    assert translate_error("Longer than maximum length 200.") == "Too long: at most 200 characters."
    assert translate_error("Must be one of: low, medium.") == "Choose one of the options."
    assert translate_error("a message nobody mapped yet") == "a message nobody mapped yet"
