"""What field encryption costs at intake, measured in one run.

    .venv/bin/python bench/crypto_overhead.py [--referrals 600]

Two copies of the same freshly migrated embedded-profile database serve the same referrals:
one through the real crypto layer, one through `PassThroughVault` and `PlainMatcher` below, which store
plaintext bytes, wrap nothing and hash nothing. That pass-through exists only in this file
and is injected into one `Services` object here; no configuration can select it.

Every referral has a fresh CNIC and phone (a new subject each time) and is submitted by
  * HTTP: Flask test-client POST /api/v1/referrals (auth, validation, JSON, the service, commit);
  * service: `submit_referral` with an already-validated command (no HTTP, no auth).
Real and pass-through alternate referral by referral. The overhead is median(real) /
median(pass-through) - 1 over single-referral times, in wall-clock and in this process's CPU
time (the CPU figure is less disturbed by other load on the machine), plus a direct measurement
of the crypto work one intake does (7 field seals, one data key generated and wrapped,
blind-index HMACs) as a noise-free cross-check.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session  # noqa: E402

from referral_service.app import create_app  # noqa: E402
from referral_service.bootstrap import Services, bootstrap, prepare_database  # noqa: E402
from referral_service.config import Settings  # noqa: E402
from referral_service.crypto import BlindIndexer, DataKey, FieldCipher, FieldContext  # noqa: E402
from referral_service.crypto.blind_index import BITS, normalise_cnic, normalise_phone  # noqa: E402
from referral_service.crypto.keyring import create_keyring  # noqa: E402
from referral_service.db.models import Subject, SubjectKey  # noqa: E402
from referral_service.domain.model import Actor, Role  # noqa: E402
from referral_service.services import users  # noqa: E402
from referral_service.services.matching import DuplicateMatcher  # noqa: E402
from referral_service.services.referrals import submit_referral  # noqa: E402
from referral_service.services.vault import Vault  # noqa: E402
from schemas import ReferralInputSchema  # noqa: E402

BODY: dict[str, Any] = {
    "subject": {
        "full_name": "Benchmark Person",
        "date_of_birth": "1990-04-12",
        "sex": "female",
        "cnic": "",
        "phone": "",
        "address": "House 12, Street 4, Hayatabad Phase 3",
        "province": "Khyber Pakhtunkhwa",
        "district": "Peshawar",
        "preferred_language": "ps",
    },
    "incident": {"type": "bombing", "date": "2026-09-30", "narrative": "Injured at the bazaar blast " * 4},
    "needs": ["medical", "psychosocial"],
    "risk_level": "high",
    "consent": {"given": True, "method": "verbal", "share": ["contact"]},
    "preferences": {"staff_sex": "any"},
}


# -- the pass-through: benchmark only ---------------------------------------------------------
class PassThroughCipher(FieldCipher):
    """Stores the UTF-8 plaintext as is: the baseline that costs no cryptography."""

    def encrypt(self, key: DataKey, plaintext: str, context: FieldContext) -> bytes:
        return plaintext.encode("utf-8")

    def decrypt(self, key: DataKey, ciphertext: bytes | memoryview, context: FieldContext) -> str:
        return bytes(ciphertext).decode("utf-8")


class PlainIndexer(BlindIndexer):
    """Same rows, same normalisation, no keyed hash: CRC-32 folded to `BITS` bits.

    A checksum, not the digits themselves: real CNICs and phones arrive in no particular order,
    and an index fed sequential values would flatter the baseline with append-only B-tree inserts.
    """

    def __init__(self, version: int = 1) -> None:
        self.version = version

    def index(self, column: str, value: str) -> int:
        normalised = (normalise_cnic if column == "cnic" else normalise_phone)(value)
        return zlib.crc32(normalised.encode()) >> (32 - BITS)


class _NoKey:
    def __init__(self) -> None:
        self.key_id = uuid.uuid4()


class PassThroughVault(Vault):
    """The real vault with every cryptographic step removed, but the same rows written."""

    def __init__(self, real: Vault) -> None:
        super().__init__(real.keys, PassThroughCipher(), real.access)

    def _new_key(self, session: Session, subject_id: str, now: datetime) -> Any:
        key = _NoKey()
        session.add(
            SubjectKey(id=str(key.key_id), subject_id=subject_id, kek_id="none", wrapped=os.urandom(60), created_at=now)
        )
        session.info.setdefault("referral_service.deks", {})[subject_id] = key
        return key

    def data_key(self, session: Session, subject: Subject) -> Any:
        return session.info.setdefault("referral_service.deks", {}).setdefault(subject.id, _NoKey())


class PlainMatcher(DuplicateMatcher):
    """The real matcher over the pass-through vault, with CRC-32 for the keyed hash."""

    def __init__(self, real: DuplicateMatcher, vault: Vault) -> None:
        super().__init__(real.keys, PlainIndexer(), vault)

    def indexer_for(self, version: int) -> BlindIndexer:
        return self.indexer


# -- set-up -----------------------------------------------------------------------------------
def _make_services(template: Path, target: Path, *, plain: bool) -> Services:
    shutil.copytree(template, target)
    services = bootstrap(Settings.from_env({"REFERRAL_HOME": str(target)}))
    if plain:
        services.vault = PassThroughVault(services.vault)
        services.matcher = PlainMatcher(services.matcher, services.vault)
    return services


def _template(root: Path) -> Path:
    home = root / "template"
    settings = Settings.from_env({"REFERRAL_HOME": str(home)})
    create_keyring(settings.keyring_path)
    services = bootstrap(settings)
    prepare_database(services)
    services.dispose()
    return home


class IntakePath:
    """One intake path on one Services: HTTP or service-level submit."""

    def __init__(self, services: Services, via: str) -> None:
        self.services, self.via = services, via
        created = users.create_user(services, name=f"bench-{via}", role="caseworker")
        self.actor = Actor(created["id"], Role.CASEWORKER, None, created["name"])
        self.headers = {"Authorization": f"Bearer {created['token']}"}
        self.client = create_app(services, {"TESTING": True}).test_client()
        self.serial = 0

    def _body(self) -> dict[str, Any]:
        self.serial += 1
        body = {
            **BODY,
            "subject": {
                **BODY["subject"],
                "cnic": f"61101-{self.serial:07d}-{self.serial % 10}",
                "phone": f"+92321{self.serial:07d}",
            },
        }
        return body

    def one(self) -> tuple[float, float]:
        """Submit one referral; (wall seconds, CPU seconds of this process)."""
        body = self._body()
        if self.via == "http":
            wall, cpu = time.perf_counter(), time.process_time()
            resp = self.client.post("/api/v1/referrals", json=body, headers=self.headers)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if resp.status_code != 201:
                raise SystemExit(f"intake failed: {resp.status_code} {resp.get_data(as_text=True)[:300]}")
        else:
            cmd = ReferralInputSchema().load(body)
            wall, cpu = time.perf_counter(), time.process_time()
            submit_referral(self.services, cmd, self.actor)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu


def _crypto_work_per_intake(services: Services, repeats: int = 2000) -> float:
    """Seconds of pure crypto one intake does: DEK generate + wrap, 7 seals, 2 index HMACs x 2 (lookup, write)."""
    vault = services.vault
    fields = [BODY["subject"][f] for f in ("full_name", "date_of_birth", "sex", "cnic", "phone", "address")]
    fields.append(BODY["incident"]["narrative"])
    indexer = services.matcher.indexer_for(1)
    started = time.perf_counter()
    for _ in range(repeats):
        key, material = DataKey.generate()
        vault.keys.wrap_dek(material, subject_id="s", key_id=key.key_id)
        for value in fields:
            vault.cipher.encrypt(key, value, FieldContext("subjects", "f", "r", "s"))
        for _ in range(2):
            indexer.index("cnic", "61101-0000001-1")
            indexer.index("phone", "+923210000001")
    return (time.perf_counter() - started) / repeats


def _files(services: Services) -> bytes:
    return b"".join(p.read_bytes() for p in services.settings.home.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=600, help="per path (4 paths)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="crypto-bench-") as tmp:
        root = Path(tmp)
        template = _template(root)
        real = _make_services(template, root / "real", plain=False)
        plain = _make_services(template, root / "plain", plain=True)
        paths: dict[tuple[str, str], IntakePath] = {
            (via, kind): IntakePath(svc, via)
            for via in ("http", "service")
            for kind, svc in (("real", real), ("plain", plain))
        }
        for path in paths.values():  # warm up: imports, statement caches, SQLite page cache
            for _ in range(20):
                path.one()
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in paths}
        for n in range(args.referrals):
            # Alternate referral by referral (and which goes first) so load from elsewhere on the
            # machine lands on both paths alike.
            for via in ("http", "service"):
                for kind in ("real", "plain") if n % 2 == 0 else ("plain", "real"):
                    samples[(via, kind)].append(paths[(via, kind)].one())
        crypto_us = _crypto_work_per_intake(real) * 1e6

        # The pass-through really stored plaintext; the real one did not (sanity, not a benchmark).
        assert b"Benchmark Person" in _files(plain) and b"Benchmark Person" not in _files(real)

        total = args.referrals
        print(
            f"crypto overhead at intake: {total} referrals per path, alternating real/pass-through; "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite (embedded profile)"
        )
        print("  path                            measure  real (median)  pass-through  overhead")
        medians: dict[tuple[str, str, int], float] = {}
        for via, label in (("http", "HTTP POST /api/v1/referrals"), ("service", "submit_referral (service)")):
            for index, measure in ((0, "wall"), (1, "CPU")):
                with_crypto = statistics.median(t[index] for t in samples[(via, "real")]) * 1e3
                without = statistics.median(t[index] for t in samples[(via, "plain")]) * 1e3
                medians[(via, "plain", index)] = without
                print(
                    f"  {label:31s} {measure:7s} {with_crypto:9.3f} ms {without:10.3f} ms  "
                    f"{100 * (with_crypto / without - 1):+6.2f} %"
                )
        http_plain = medians[("http", "plain", 0)] * 1e3
        print(
            f"  pure crypto work per intake (7 seals, 1 DEK generated + wrapped, 4 index HMACs): {crypto_us:.1f} us"
            f" = {100 * crypto_us / http_plain:.2f} % of a pass-through HTTP intake"
        )
        real.dispose()
        plain.dispose()


if __name__ == "__main__":
    main()
