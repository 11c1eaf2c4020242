from __future__ import annotations

import json
from pathlib import Path

import pytest

from referral_service.config import ConfigError, Settings
from referral_service.domain.deadlines import DeadlinePolicy, parse_duration


def test_embedded_profile_is_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"REFERRAL_HOME": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'referrals.sqlite3'}"
    assert settings.broker_url == "memory://"
    assert settings.keyring_path == tmp_path / "keyring.json"
    assert not settings.broker_is_durable


def test_production_profile_from_urls(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "REFERRAL_HOME": str(tmp_path),
            "REFERRAL_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "REFERRAL_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        }
    )
    assert not settings.embedded
    assert settings.broker_is_durable


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REFERRAL_DATABASE_URL": "not a url"}, "REFERRAL_DATABASE_URL"),
        ({"REFERRAL_DATABASE_URL": "mysql://x@y/z"}, "REFERRAL_DATABASE_URL"),
        ({"REFERRAL_DATABASE_URL": "postgresql+pg8000://x@y/z"}, "REFERRAL_DATABASE_URL"),
        ({"REFERRAL_BROKER_URL": "redis://localhost"}, "REFERRAL_BROKER_URL"),
        ({"REFERRAL_BROKER_URL": "localhost:5672"}, "REFERRAL_BROKER_URL"),
        ({"REFERRAL_DEADLINE_POLICY": "/nonexistent/policy.json"}, "REFERRAL_DEADLINE_POLICY"),
        ({"REFERRAL_METRICS_TOKEN": "short"}, "REFERRAL_METRICS_TOKEN"),
        ({"REFERRAL_METRICS_TOKEN": "a token with spaces in it, long enough"}, "REFERRAL_METRICS_TOKEN"),
        ({"REFERRAL_TRUSTED_PROXIES": "yes"}, "REFERRAL_TRUSTED_PROXIES"),
        ({"REFERRAL_TRUSTED_PROXIES": "-1"}, "REFERRAL_TRUSTED_PROXIES"),
        ({"REFERRAL_TRUSTED_PROXIES": "99"}, "REFERRAL_TRUSTED_PROXIES"),
    ],
)
def test_bad_configuration_names_the_variable_in_one_line(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REFERRAL_HOME": str(tmp_path), **env})
    message = str(info.value)
    assert message.startswith(variable)
    assert "\n" not in message


def test_metrics_are_off_and_no_proxy_is_trusted_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"REFERRAL_HOME": str(tmp_path)})
    assert settings.metrics_token is None
    assert settings.trusted_proxies == 0


def test_metrics_token_and_trusted_proxies_are_read_from_the_environment(tmp_path: Path) -> None:
    token = "0123456789abcdef" * 4
    settings = Settings.from_env(
        {"REFERRAL_HOME": str(tmp_path), "REFERRAL_METRICS_TOKEN": token, "REFERRAL_TRUSTED_PROXIES": "2"}
    )
    assert settings.metrics_token == token
    assert settings.trusted_proxies == 2


def test_deadline_policy_file_overrides_only_the_levels_it_names(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"critical": {"accept": "PT30M"}}))
    policy = DeadlinePolicy.load(path)
    default = DeadlinePolicy.default()
    assert policy.for_risk("critical").accept == parse_duration("PT30M")
    assert policy.for_risk("critical").first_contact == default.for_risk("critical").first_contact
    assert policy.for_risk("low") == default.for_risk("low")


@pytest.mark.parametrize(
    "content",
    [
        '{"urgent": {"accept": "PT1H"}}',
        '{"high": {"accept": "1 hour"}}',
        '{"high": {"respond": "PT1H"}}',
        "[1, 2]",
        "{not json",
    ],
)
def test_bad_deadline_policy_is_rejected_with_a_reason(tmp_path: Path, content: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r".+"):
        DeadlinePolicy.load(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT1H", 3600), ("P7D", 7 * 86400), ("PT4H30M", 16200), ("P1DT1S", 86401), ("P2W", 14 * 86400)],
)
def test_iso_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["P", "PT", "1H", "P1M", "PT1.5H", ""])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_duration(text)


def test_session_and_rate_limit_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"REFERRAL_HOME": str(tmp_path)})
    assert (settings.session_idle_minutes, settings.session_max_hours) == (30, 12)
    assert settings.ratelimit_enabled and settings.ratelimit_storage_url == "memory://"
    assert (settings.ratelimit_login, settings.ratelimit_api_auth_failures) == ("10 per minute", "20 per minute")


def test_session_and_rate_limit_settings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "REFERRAL_HOME": str(tmp_path),
            "REFERRAL_SESSION_IDLE_MINUTES": "15",
            "REFERRAL_SESSION_MAX_HOURS": "8",
            "REFERRAL_RATELIMIT_ENABLED": "false",
            "REFERRAL_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
            "REFERRAL_RATELIMIT_LOGIN": "5/minute",
            "REFERRAL_RATELIMIT_API_AUTH_FAILURES": "100 per hour",
        }
    )
    assert (settings.session_idle_minutes, settings.session_max_hours) == (15, 8)
    assert not settings.ratelimit_enabled
    assert settings.ratelimit_storage_url == "redis://127.0.0.1:6379/0"
    assert (settings.ratelimit_login, settings.ratelimit_api_auth_failures) == ("5/minute", "100 per hour")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REFERRAL_SESSION_IDLE_MINUTES", "thirty"),
        ("REFERRAL_SESSION_IDLE_MINUTES", "0"),
        ("REFERRAL_SESSION_IDLE_MINUTES", "-5"),
        ("REFERRAL_SESSION_IDLE_MINUTES", "٣٠"),  # Arabic-Indic digits pass str.isdigit
        ("REFERRAL_SESSION_MAX_HOURS", "1.5"),
        ("REFERRAL_SESSION_MAX_HOURS", "100000"),
        ("REFERRAL_RATELIMIT_ENABLED", "maybe"),
        ("REFERRAL_RATELIMIT_STORAGE_URL", "localhost:6379"),
        ("REFERRAL_RATELIMIT_STORAGE_URL", "postgresql://user:secret@db/x"),
        ("REFERRAL_RATELIMIT_LOGIN", "lots"),
        ("REFERRAL_RATELIMIT_API_AUTH_FAILURES", "20 per fortnight"),
    ],
)
def test_bad_session_or_rate_limit_setting_is_one_line_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REFERRAL_HOME": str(tmp_path), variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert "secret" not in message
