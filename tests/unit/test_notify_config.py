"""Notification settings: a bad value stops start-up with one line naming the variable."""

from __future__ import annotations

import pytest

from referral_service.config import ConfigError, Settings


def test_smtp_urls_parse_with_tls_and_credentials() -> None:
    relay = Settings.from_env({"REFERRAL_SMTP_URL": "smtps://relay%40van:s3cret@mail.example.org:2465"}).smtp
    assert relay is not None
    assert (relay.host, relay.port, relay.tls, relay.username, relay.password) == (
        "mail.example.org",
        2465,
        True,
        "relay@van",
        "s3cret",
    )
    assert "s3cret" not in repr(relay)
    plain = Settings.from_env({"REFERRAL_SMTP_URL": "smtp://127.0.0.1"}).smtp
    assert plain is not None and (plain.port, plain.tls) == (25, False)
    assert Settings.from_env({}).smtp is None


def test_defaults_refuse_private_webhooks_and_link_to_the_local_service() -> None:
    s = Settings.from_env({})
    assert s.webhook_allow_private is False and s.public_url == "http://127.0.0.1:8000"
    assert Settings.from_env({"REFERRAL_WEBHOOK_ALLOW_PRIVATE": "1"}).webhook_allow_private is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REFERRAL_SMTP_URL": "mail.example.org:25"}, "REFERRAL_SMTP_URL: expected smtp://host:port"),
        ({"REFERRAL_SMTP_URL": "http://mail.example.org"}, "got a URL with scheme 'http'"),
        ({"REFERRAL_SMTP_URL": "smtp://mail.example.org:x"}, "the port is not a number"),
        ({"REFERRAL_SMTP_URL": "smtp://:25"}, "the host is missing"),
        ({"REFERRAL_SMTP_FROM": "not an address"}, "REFERRAL_SMTP_FROM: expected one e-mail address"),
        ({"REFERRAL_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "REFERRAL_WEBHOOK_ALLOW_PRIVATE: expected 1 or 0"),
        ({"REFERRAL_PUBLIC_URL": "referrals.example.org"}, "REFERRAL_PUBLIC_URL: the service's address"),
    ],
)
def test_bad_notification_settings_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value)
