"""The short chaos run of CI (`bench/chaos.py`, about 60 referrals a profile): processes killed with
SIGKILL and restarted under load, RabbitMQ and PostgreSQL restarted once each on the production profile;
nothing lost, nothing duplicated, no double offer or deadline, every webhook delivered, the audit log
verified with every submission and acceptance on record exactly once (the bench checks; exit 1 on any)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import require_postgres, require_rabbitmq

# Restarts the shared PostgreSQL and RabbitMQ: `make test` runs it alone, after the parallel part.
pytestmark = [pytest.mark.integration, pytest.mark.restarts_servers]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
SHORT = ["--referrals", "60", "--rate", "10", "--kill-every", "3", "--accept-seconds", "8", "--settle-seconds", "240"]


def _chaos(*args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    done = subprocess.run(
        [sys.executable, str(BENCH), *SHORT, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    print(json.dumps(report, indent=2))  # the figures, in the CI log
    assert done.returncode == 0 and report["failed"] == [], report
    assert report["kills"] >= 3 and report["lapsed"] > 0 and report["accepted"] > 0, report
    return report


def test_the_embedded_run_killed_again_and_again_loses_and_duplicates_nothing() -> None:
    _chaos("--embedded")


def test_the_production_profile_under_kills_and_server_restarts_loses_and_duplicates_nothing() -> None:
    require_postgres()
    require_rabbitmq()
    restarts = os.environ.get("CHAOS_SERVER_RESTARTS", "1") == "1" and shutil.which("pg_ctlcluster") is not None
    report = _chaos(*([] if restarts else ["--no-server-restarts"]))
    if restarts:
        assert set(report["restarts"]) == {"rabbitmq", "postgresql"}, report  # type: ignore[arg-type]
