"""`keys rotate` while referrals are submitted and read; killed half-way, resumed, then the old KEK retired."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from sqlalchemy import func, select

from referral_service.bootstrap import Services
from referral_service.crypto.keyring import FileKeyring
from referral_service.db.models import Subject
from referral_service.domain.model import SubjectInput
from referral_service.services import keys
from tests.factories import referral_body

CLI = [sys.executable, "-m", "referral_service"]
SUBJECTS = 300


def _env(services: Services) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_HOME"] = str(services.settings.home)
    env["REFERRAL_DATABASE_URL"] = services.settings.database_url
    return env


def _cli(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=_env(services), capture_output=True, text=True, timeout=180, check=False)


def _usage(services: Services) -> dict[str, int]:
    return keys.kek_usage(services)


class Load:
    """Writers submit and readers read referrals through the API until stopped; errors are kept."""

    def __init__(self, app: Any, headers: dict[str, str], readable: dict[str, str]) -> None:
        self.app, self.headers, self.readable = app, headers, readable
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.submitted: dict[str, str] = {}  # referral id -> full name
        self.reads = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(2)]
        self.threads += [threading.Thread(target=self._read, args=(n,)) for n in range(2)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _write(self, worker: int) -> None:
        client = self.app.test_client()
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"Load Writer {worker} No {n}"
            body = referral_body(
                subject__full_name=name,
                subject__cnic=f"3520{worker}-{n:07d}-1",
                subject__phone=f"+92345{worker}{n:06d}",
            )
            resp = client.post("/api/v1/referrals", json=body, headers=self.headers)
            if resp.status_code != 201:
                self.errors.append(f"submit {resp.status_code}: {resp.get_data(as_text=True)[:200]}")
                continue
            with self._lock:
                self.submitted[resp.get_json()["id"]] = name

    def _read(self, seed: int) -> None:
        client = self.app.test_client()
        rng = random.Random(seed)
        while not self.stop.is_set():
            with self._lock:
                pool = {**self.readable, **self.submitted}
            referral_id, name = rng.choice(sorted(pool.items()))
            resp = client.get(f"/api/v1/referrals/{referral_id}", headers=self.headers)
            shown = resp.get_json() if resp.status_code == 200 else None
            if shown is None or shown["subject"]["full_name"] != name:
                self.errors.append(f"read {resp.status_code}: {resp.get_data(as_text=True)[:200]}")
            self.reads += 1


def _seed(services: Services, client: Any, headers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    readable: dict[str, str] = {}
    for n in range(10):
        name = f"Readable Person {n}"
        resp = client.post(
            "/api/v1/referrals",
            json=referral_body(
                subject__full_name=name, subject__cnic=f"42201-{n:07d}-5", subject__phone=f"+92300{n:07d}"
            ),
            headers=headers,
        )
        assert resp.status_code == 201
        readable[resp.get_json()["id"]] = name
    names: dict[str, str] = {}
    with services.uow() as uow:
        for n in range(SUBJECTS - len(readable)):
            name = f"Bulk Subject {n}"
            subject = services.vault.create_subject(
                uow.session,
                SubjectInput(full_name=name, province="Punjab", district="Lahore", cnic=f"35201-{n:07d}-9"),
                services.clock.now(),
            )
            names[subject.id] = name
        uow.commit()
    return readable, names


def test_rotation_survives_load_and_a_kill_and_completes_on_resume(
    services: Services, app: Any, make_user: Any
) -> None:
    rotate_under_load(services, app, make_user("supervisor").headers)


def rotate_under_load(services: Services, app: Any, headers: dict[str, str]) -> None:
    """Seed, rotate under load, SIGKILL the rotation, resume it, retire the old KEK; check everything."""
    readable, bulk = _seed(services, app.test_client(), headers)
    old_kek = FileKeyring(services.settings.keyring_path).active_kek_id()
    assert _usage(services) == {old_kek: SUBJECTS}

    with Load(app, headers, readable) as load:
        rotation = subprocess.Popen(
            [*CLI, "keys", "rotate", "--batch-size", "5", "--pause", "0.05"],
            env=_env(services),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:  # kill it once some, but far from all, data keys have moved
            usage = _usage(services)
            moved = sum(n for kek, n in usage.items() if kek != old_kek)
            if moved >= 40:
                rotation.send_signal(signal.SIGKILL)
                break
            assert rotation.poll() is None, f"rotation ended before it could be interrupted: {rotation.stderr}"
            assert time.monotonic() < deadline, "rotation made no visible progress"
            time.sleep(0.01)
        rotation.communicate(timeout=30)
        assert rotation.returncode == -signal.SIGKILL

        new_kek = FileKeyring(services.settings.keyring_path).active_kek_id()
        assert new_kek != old_kek
        half = _usage(services)
        assert half.get(old_kek, 0) > 0 and half.get(new_kek, 0) >= 40, half
        print(f"killed with data keys per KEK: {half}")

        refused = _cli(services, "keys", "retire", old_kek)
        assert refused.returncode != 0 and "still wraps" in refused.stderr

        time.sleep(0.3)  # load keeps running against the half-rotated database
        resumed = _cli(services, "keys", "rotate", "--resume", "--batch-size", "7")
        assert resumed.returncode == 0, resumed.stderr
        assert "new active" not in resumed.stdout  # --resume re-wraps only, under the same new KEK
        time.sleep(0.3)

    assert load.errors == []
    assert load.reads > 20 and len(load.submitted) > 5
    total = SUBJECTS + len(load.submitted)
    assert _usage(services) == {new_kek: total}

    retired = _cli(services, "keys", "retire", old_kek)
    assert retired.returncode == 0, retired.stderr
    assert FileKeyring(services.settings.keyring_path).kek_ids() == [new_kek]

    expected = {**bulk}
    with services.uow() as uow:
        for subject in uow.session.scalars(select(Subject)):
            shown = services.vault.reveal_subject(uow.session, subject, ["full_name"], actor=None, referral_id=None)
            assert shown["erased"] is False and shown["full_name"]
            if subject.id in expected:
                assert shown["full_name"] == expected[subject.id]
        assert uow.session.scalar(select(func.count()).select_from(Subject)) == total
        uow.commit()  # the reveals are audited
    client = app.test_client()
    for referral_id, name in [*readable.items(), *load.submitted.items()]:
        assert (
            client.get(f"/api/v1/referrals/{referral_id}", headers=headers).get_json()["subject"]["full_name"] == name
        )
    started = _cli(services, "keys", "status")  # a fresh process starts with the retired keyring
    assert started.returncode == 0 and f'"data_keys_per_kek": {{"{new_kek}": {total}}}' in started.stdout
