"""The keyring file: every way it can be wrong stops with one clear line, never garbage."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from referral_service.bootstrap import Services, bootstrap
from referral_service.crypto import FieldCipher, FieldContext
from referral_service.crypto.envelope import DataKey, DecryptionError
from referral_service.crypto.keyring import (
    FileKeyring,
    KeyringError,
    add_active_kek,
    create_keyring,
    retire_kek,
)
from referral_service.db.models import CryptoMeta, Subject
from referral_service.domain.model import SubjectInput
from referral_service.services.keys import verify_keys
from tests.conftest import embedded_settings


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    create_keyring(path)
    return path


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _one_line_error(path: Path) -> str:
    with pytest.raises(KeyringError) as caught:
        FileKeyring(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("REFERRAL_KEYRING: ")
    return message


def _active(data: dict[str, Any]) -> str:
    return str(data["active"])


def test_missing_keyring_says_how_to_create_one(tmp_path: Path) -> None:
    assert "keys init" in _one_line_error(tmp_path / "nowhere.json")


def test_keyring_that_is_not_json_is_refused(keyring_path: Path) -> None:
    keyring_path.write_text("{not json")
    assert "not a readable JSON keyring" in _one_line_error(keyring_path)


@pytest.mark.parametrize(
    "content",
    ["[]", '"text"', '{"format": "other", "version": 1}', '{"format": "referral-service-keyring", "version": 2}'],
)
def test_json_that_is_not_a_keyring_is_refused(keyring_path: Path, content: str) -> None:
    keyring_path.write_text(content)
    assert "not a referral-service keyring" in _one_line_error(keyring_path)


@pytest.mark.parametrize("active", [None, "kek-unknown", ["a", "list"], {"a": 1}, 7])
def test_keyring_without_a_usable_active_key_is_refused(keyring_path: Path, active: Any) -> None:
    _edit(keyring_path, lambda d: d.update(active=active))
    assert "no active key-encryption key" in _one_line_error(keyring_path)


def test_keyring_with_no_keks_is_refused(keyring_path: Path) -> None:
    _edit(keyring_path, lambda d: d.update(keks={}))
    assert "no active key-encryption key" in _one_line_error(keyring_path)


def test_kek_of_the_wrong_length_is_refused(keyring_path: Path) -> None:
    def shorten(d: dict[str, Any]) -> None:
        d["keks"][_active(d)]["key"] = base64.b64encode(os.urandom(16)).decode()

    _edit(keyring_path, shorten)
    assert "must be 32 bytes, found 16" in _one_line_error(keyring_path)


@pytest.mark.parametrize("bad", ["not base64 at all!", "QUJD=extra", 12345, None])
def test_kek_that_is_not_base64_is_refused(keyring_path: Path, bad: Any) -> None:
    def spoil(d: dict[str, Any]) -> None:
        d["keks"][_active(d)]["key"] = bad

    _edit(keyring_path, spoil)
    message = _one_line_error(keyring_path)
    assert "base64" in message or "missing" in message


def test_malformed_kek_entry_is_refused(keyring_path: Path) -> None:
    _edit(keyring_path, lambda d: d["keks"].update({"kek-x": "just a string"}))
    assert "entry kek-x is malformed" in _one_line_error(keyring_path)


@pytest.mark.parametrize("root", [None, "", base64.b64encode(b"x" * 31).decode(), "%%%"])
def test_missing_or_bad_root_key_is_refused(keyring_path: Path, root: Any) -> None:
    _edit(keyring_path, lambda d: d.update(root=root))
    assert "root key" in _one_line_error(keyring_path)


def test_retired_active_key_is_refused(keyring_path: Path) -> None:
    def retire(d: dict[str, Any]) -> None:
        d["keks"][_active(d)]["retired"] = True

    _edit(keyring_path, retire)
    assert "is marked retired" in _one_line_error(keyring_path)


def test_errors_never_echo_key_material(keyring_path: Path) -> None:
    data = json.loads(keyring_path.read_text())
    secret = data["keks"][data["active"]]["key"]
    _edit(keyring_path, lambda d: d.update(root=secret[:-4]))
    assert secret[:-4] not in _one_line_error(keyring_path)


def test_new_keyring_is_private_and_never_overwritten(keyring_path: Path) -> None:
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    before = keyring_path.read_bytes()
    with pytest.raises(KeyringError, match="refusing to overwrite"):
        create_keyring(keyring_path)
    assert keyring_path.read_bytes() == before
    assert [p.name for p in keyring_path.parent.iterdir() if p.name.startswith(".keyring-")] == []


def test_wrapped_data_key_opens_only_for_its_subject_and_key_id(keyring_path: Path) -> None:
    keys = FileKeyring(keyring_path)
    key_id, material = uuid.uuid4(), os.urandom(32)
    kek_id, wrapped = keys.wrap_dek(material, subject_id="s1", key_id=key_id)
    assert keys.unwrap_dek(kek_id, wrapped, subject_id="s1", key_id=key_id) == material
    assert material not in wrapped
    with pytest.raises(KeyringError):
        keys.unwrap_dek(kek_id, wrapped, subject_id="s2", key_id=key_id)
    with pytest.raises(KeyringError):
        keys.unwrap_dek(kek_id, wrapped, subject_id="s1", key_id=uuid.uuid4())
    with pytest.raises(DecryptionError, match="wrong length"):
        keys.unwrap_dek(kek_id, wrapped[:20], subject_id="s1", key_id=key_id)


def test_wrong_kek_fails_clearly_instead_of_yielding_a_key(keyring_path: Path, tmp_path: Path) -> None:
    keys = FileKeyring(keyring_path)
    key_id = uuid.uuid4()
    kek_id, wrapped = keys.wrap_dek(os.urandom(32), subject_id="s1", key_id=key_id)

    impostor_path = tmp_path / "impostor.json"
    impostor_path.write_text(keyring_path.read_text())

    def replace_material(d: dict[str, Any]) -> None:
        d["keks"][kek_id]["key"] = base64.b64encode(os.urandom(32)).decode()

    _edit(impostor_path, replace_material)
    with pytest.raises(KeyringError) as caught:
        FileKeyring(impostor_path).unwrap_dek(kek_id, wrapped, subject_id="s1", key_id=key_id)
    assert str(caught.value) == (
        f"REFERRAL_KEYRING: key-encryption key {kek_id} does not open its data keys (wrong keyring?)"
    )


def test_unknown_kek_id_is_named(keyring_path: Path) -> None:
    with pytest.raises(KeyringError, match="kek-gone is not in the keyring"):
        FileKeyring(keyring_path).unwrap_dek("kek-gone", b"\x00" * 60, subject_id="s", key_id=uuid.uuid4())


def test_rotation_is_seen_by_a_running_keyring_and_old_keys_still_unwrap(keyring_path: Path) -> None:
    running = FileKeyring(keyring_path)
    old = running.active_kek_id()
    key_id, material = uuid.uuid4(), os.urandom(32)
    _, wrapped = running.wrap_dek(material, subject_id="s", key_id=key_id)

    new = add_active_kek(keyring_path)
    assert new != old
    assert running.active_kek_id() == new  # picked up from the file without a restart
    assert running.kek_ids() == sorted([old, new])
    assert running.wrap_dek(material, subject_id="s", key_id=key_id)[0] == new
    assert running.unwrap_dek(old, wrapped, subject_id="s", key_id=key_id) == material


def test_retire_refuses_the_active_key_and_unknown_keys_then_removes_an_old_one(keyring_path: Path) -> None:
    old = FileKeyring(keyring_path).active_kek_id()
    with pytest.raises(KeyringError, match="is the active key"):
        retire_kek(keyring_path, old)
    with pytest.raises(KeyringError, match="no key kek-nope"):
        retire_kek(keyring_path, "kek-nope")
    new = add_active_kek(keyring_path)
    retire_kek(keyring_path, old)
    assert FileKeyring(keyring_path).kek_ids() == [new]


def test_a_changed_root_key_under_a_running_keyring_is_refused(keyring_path: Path) -> None:
    running = FileKeyring(keyring_path)
    _edit(keyring_path, lambda d: d.update(root=base64.b64encode(os.urandom(32)).decode()))
    with pytest.raises(KeyringError, match="root key .* changed"):
        running.active_kek_id()


def test_derived_secrets_are_stable_and_distinct_per_purpose(keyring_path: Path) -> None:
    a, b = FileKeyring(keyring_path), FileKeyring(keyring_path)
    assert a.derive_secret("blind-index/cnic/v1") == b.derive_secret("blind-index/cnic/v1")
    assert a.derive_secret("blind-index/cnic/v1") != a.derive_secret("blind-index/phone/v1")
    assert len(a.derive_secret("x")) == 32


# -- start-up verification against a database ---------------------------------------------------
def _add_subject(services: Services) -> str:
    with services.uow() as uow:
        subject = services.vault.create_subject(
            uow.session,
            SubjectInput(full_name="Nasreen Bibi", province="Punjab", district="Lahore", cnic="35202-1234567-1"),
            services.clock.now(),
        )
        uow.commit()
        return subject.id


def _verify(services: Services) -> None:
    verify_keys(services)


def test_a_different_keyring_against_an_existing_database_is_refused(services: Services, tmp_path: Path) -> None:
    _add_subject(services)
    other = tmp_path / "other-keyring.json"
    create_keyring(other)
    wrong = bootstrap(embedded_settings(services.settings.home), keys=FileKeyring(other), engine=services.engine)
    with pytest.raises(KeyringError) as caught:
        _verify(wrong)
    assert str(caught.value) == "REFERRAL_KEYRING: this keyring is not the one this database was created with"


def test_keyring_with_a_replaced_kek_is_refused_at_start_up(services: Services, tmp_path: Path) -> None:
    _add_subject(services)
    spoiled = tmp_path / "spoiled.json"
    spoiled.write_text(services.settings.keyring_path.read_text())

    def replace_active(d: dict[str, Any]) -> None:
        d["keks"][_active(d)]["key"] = base64.b64encode(os.urandom(32)).decode()

    _edit(spoiled, replace_active)
    wrong = bootstrap(embedded_settings(services.settings.home), keys=FileKeyring(spoiled), engine=services.engine)
    with pytest.raises(KeyringError, match="does not open its data keys"):
        _verify(wrong)


def test_keyring_missing_a_kek_that_wraps_data_keys_is_refused(services: Services) -> None:
    _add_subject(services)
    path = services.settings.keyring_path
    old = FileKeyring(path).active_kek_id()
    add_active_kek(path)
    _edit(path, lambda d: d["keks"].pop(old))  # removed by hand, without `keys retire`'s check
    fresh = bootstrap(embedded_settings(services.settings.home), engine=services.engine)
    with pytest.raises(KeyringError, match=f"key {old}, which wraps stored data keys, is missing"):
        _verify(fresh)


def test_right_keyring_opens_what_it_sealed(services: Services) -> None:
    subject_id = _add_subject(services)
    _verify(services)
    with services.uow() as uow:
        subject = uow.session.get(Subject, subject_id)
        assert subject is not None
        shown = services.vault.reveal_subject(uow.session, subject, ["full_name", "cnic"], actor=None, referral_id=None)
        uow.commit()
    assert shown == {"full_name": "Nasreen Bibi", "cnic": "35202-1234567-1", "erased": False, "damaged": False}


def test_data_key_cannot_open_a_field_sealed_for_another_subject(services: Services) -> None:
    a, b = _add_subject(services), _add_subject(services)
    with services.uow() as uow:
        pd = services.vault
        sa, sb = uow.session.get(Subject, a), uow.session.get(Subject, b)
        assert sa is not None and sb is not None
        key_b: DataKey = pd.data_key(uow.session, sb)
        assert sa.full_name_ct is not None
        with pytest.raises(DecryptionError):
            FieldCipher().decrypt(key_b, sa.full_name_ct, FieldContext("subjects", "full_name", a, a))


# -- canaries: the keyring is proved by keys of its own, never by a subject's ----------------------
def _flip_first_key(services: Services) -> str:
    """Flip a bit of the first wrapped data key (the row the start-up check used to sample)."""
    with services.engine.begin() as conn:
        key_id, wrapped = conn.execute(
            text("SELECT id, wrapped FROM subject_keys WHERE kek_id = :k AND wrapped IS NOT NULL LIMIT 1"),
            {"k": services.keys.active_kek_id()},
        ).one()
        conn.execute(
            text("UPDATE subject_keys SET wrapped = :w WHERE id = :id"),
            {"w": bytes(wrapped[:-1]) + bytes([wrapped[-1] ^ 1]), "id": key_id},
        )
    return str(key_id)


def _canaries(services: Services) -> dict[str, str]:
    with services.uow() as uow:
        return dict(
            uow.session.execute(
                select(CryptoMeta.name, CryptoMeta.value).where(CryptoMeta.name.startswith("kek_canary:"))
            ).all()
        )


def _forget_canaries(services: Services) -> None:
    """What a database from before canaries looks like."""
    with services.engine.begin() as conn:
        conn.execute(text("DELETE FROM crypto_meta WHERE name LIKE 'kek_canary:%'"))


def test_a_damaged_first_data_key_does_not_fail_start_up(services: Services) -> None:
    _add_subject(services)
    _add_subject(services)
    _flip_first_key(services)
    _verify(services)  # the canary decides, not the damaged row


def test_the_active_kek_has_a_canary_that_opens_under_the_canary_context_only(services: Services) -> None:
    kek = services.keys.active_kek_id()
    [(name, value)] = _canaries(services).items()
    assert name == f"kek_canary:{kek}"
    wrapped = base64.b64decode(value)
    key_id = uuid.uuid5(uuid.UUID("5b1c7f0e-3d1a-4c55-9a57-2f3c6e8d9b10"), kek)
    assert len(services.keys.unwrap_dek(kek, wrapped, subject_id="referral-service/kek-canary", key_id=key_id)) == 32
    with pytest.raises(DecryptionError):  # never mistaken for (or usable as) a subject's data key
        services.keys.unwrap_dek(kek, wrapped, subject_id=str(uuid.uuid4()), key_id=key_id)


def test_a_database_from_before_canaries_gets_one_at_the_next_start_even_with_a_damaged_first_key(
    services: Services,
) -> None:
    _forget_canaries(services)
    _add_subject(services)
    _add_subject(services)
    _flip_first_key(services)
    _verify(services)  # the second key proves the KEK
    assert list(_canaries(services)) == [f"kek_canary:{services.keys.active_kek_id()}"]


def test_a_wrong_kek_is_refused_in_a_database_from_before_canaries(services: Services, tmp_path: Path) -> None:
    _forget_canaries(services)
    _add_subject(services)
    spoiled = tmp_path / "spoiled.json"
    spoiled.write_text(services.settings.keyring_path.read_text())
    _edit(spoiled, lambda d: d["keks"][_active(d)].update(key=base64.b64encode(os.urandom(32)).decode()))
    wrong = bootstrap(embedded_settings(services.settings.home), keys=FileKeyring(spoiled), engine=services.engine)
    with pytest.raises(KeyringError, match=r"does not open its data keys \(wrong keyring\?\)"):
        _verify(wrong)
    assert _canaries(services) == {}  # and the wrong KEK got no canary


def test_a_damaged_canary_is_rewritten_when_its_kek_opens_its_data_keys(services: Services) -> None:
    _add_subject(services)
    [(name, value)] = _canaries(services).items()
    raw = base64.b64decode(value)
    with services.engine.begin() as conn:
        conn.execute(
            text("UPDATE crypto_meta SET value = :v WHERE name = :n"),
            {"v": base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode(), "n": name},
        )
    _verify(services)
    assert _canaries(services)[name] not in (value, base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode())
    _verify(services)


def test_a_wrong_unwrap_is_a_keyring_error_and_a_decryption_error(keyring_path: Path) -> None:
    from referral_service.crypto.keyring import WrappedKeyDoesNotOpen

    keys = FileKeyring(keyring_path)
    key_id = uuid.uuid4()
    kek_id, wrapped = keys.wrap_dek(os.urandom(32), subject_id="s1", key_id=key_id)
    with pytest.raises(WrappedKeyDoesNotOpen) as caught:
        keys.unwrap_dek(kek_id, wrapped, subject_id="s2", key_id=key_id)
    assert isinstance(caught.value, KeyringError) and isinstance(caught.value, DecryptionError)
