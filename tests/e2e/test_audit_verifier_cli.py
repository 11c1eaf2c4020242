"""The auditors' standalone verifier as a process: a copied file without the service, and `python -m`.

(In tests/e2e, not tests/unit: these start a Python interpreter.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.unit import test_audit_verifier as unit
from tests.unit.test_audit_verifier import AUDIT, Log

log = unit.log  # the signed log on files that the unit tests of the command line use


def test_the_verifier_runs_as_a_single_copied_file_without_the_service(log: Log, tmp_path: Path) -> None:
    d, key = log.dir, log.key
    copy = tmp_path / "alone" / "verifier.py"
    copy.parent.mkdir()
    shutil.copy(AUDIT / "verifier.py", copy)
    # -I: no script directory, environment or user site on sys.path; the service's package is blocked.
    script = (
        "import runpy, sys; sys.modules['referral_service'] = None; "
        f"sys.argv = ['verifier.py'] + sys.argv[1:]; runpy.run_path({str(copy)!r}, run_name='__main__')"
    )
    help_run = subprocess.run(
        [sys.executable, "-I", "-c", script, "--help"], capture_output=True, text=True, cwd=copy.parent, timeout=60
    )
    assert help_run.returncode == 0, help_run.stderr
    for command in ("checkpoint", "tree", "inclusion", "consistency"):
        assert command in help_run.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            script,
            "consistency",
            "--key",
            key,
            "--old",
            str(d / "old.checkpoint"),
            "--new",
            str(d / "new.checkpoint"),
            "--proof",
            str(d / "consistency.json"),
        ],
        capture_output=True,
        text=True,
        cwd=copy.parent,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_the_verifier_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "referral_service.audit.verifier", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "consistency" in result.stdout
