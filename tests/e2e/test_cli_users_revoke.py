"""`referral-service users revoke USER_ID`, run as an operator does: every way in stops at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from tests.e2e.service_process import base_env, cli
from tests.e2e.test_web_forms import PASSWORD, sign_in


def test_revoke_ends_the_web_session_password_sign_in_and_the_token(
    client: FlaskClient, make_user: Any, home: Path
) -> None:
    user = make_user("caseworker", password=PASSWORD)
    assert sign_in(client, user.actor.name).status_code == 302
    assert client.get("/referrals").status_code == 200
    assert client.get("/api/v1/referrals", headers=user.headers).status_code == 200

    result = cli(base_env(home), "users", "revoke", user.actor.user_id)

    assert result.stdout.strip() == (
        f"revoked user {user.actor.user_id}: deactivated (password sign-in refused), "
        "1 API token(s) revoked, 1 web session(s) ended"
    )
    assert client.get("/referrals").status_code == 302
    assert client.get("/api/v1/referrals", headers=user.headers).status_code == 401
    again = sign_in(client, user.actor.name)
    assert again.status_code == 422 and client.get("/referrals").status_code == 302


def test_revoking_an_unknown_user_is_one_line_and_exit_2(home: Path) -> None:
    result = cli(base_env(home), "users", "revoke", "no-such-user", check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: no user with id no-such-user"]
