"""Configuration from the environment, validated once at start-up.

Every problem is reported as one `ConfigError` line naming the variable, so the CLI can
print it and exit instead of showing a traceback to an operator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(Exception):
    """Bad or missing configuration; the message is one line an operator can act on."""


EMBEDDED_BROKER = "memory://"
_BROKER_SCHEMES = ("memory", "amqp", "amqps", "pyamqp")
_DB_DRIVERS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    keyring_path: Path
    deadline_policy_path: Path | None
    secret_key: str | None = None
    cookie_secure: bool = True
    # REFERRAL_METRICS_TOKEN: Prometheus scrapers send `Authorization: Bearer <token>` to /metrics;
    # unset, /metrics answers 404 (the counters describe traffic, failed sign-ins included).
    metrics_token: str | None = None
    # REFERRAL_TRUSTED_PROXIES: how many reverse proxies in front set X-Forwarded-For/-Proto; 0
    # (default) believes no such header, so a client cannot claim HTTPS or another address.
    trusted_proxies: int = 0

    @property
    def embedded(self) -> bool:
        """The zero-setup profile: SQLite and an in-process broker."""
        return self.database_url.startswith("sqlite") and self.broker_url == EMBEDDED_BROKER

    @property
    def broker_is_durable(self) -> bool:
        # memory:// forgets everything when the process ends; the outbox must replay.
        return self.broker_url != EMBEDDED_BROKER

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("REFERRAL_HOME") or "./instance").resolve()
        database_url = env.get("REFERRAL_DATABASE_URL") or f"sqlite:///{home / 'referrals.sqlite3'}"
        _check_database_url(database_url)
        broker_url = env.get("REFERRAL_BROKER_URL") or EMBEDDED_BROKER
        scheme = broker_url.split("://", 1)[0] if "://" in broker_url else ""
        if scheme not in _BROKER_SCHEMES:
            raise ConfigError(
                "REFERRAL_BROKER_URL: expected memory:// or amqp://user:password@host:port/vhost, "
                f"got a URL with scheme {scheme or '(none)'!r}"
            )
        keyring = Path(env.get("REFERRAL_KEYRING") or home / "keyring.json")
        policy = env.get("REFERRAL_DEADLINE_POLICY")
        policy_path = Path(policy) if policy else None
        if policy_path is not None and not policy_path.is_file():
            raise ConfigError(f"REFERRAL_DEADLINE_POLICY: no such file: {policy_path}")
        return cls(
            home=home,
            database_url=database_url,
            broker_url=broker_url,
            keyring_path=keyring,
            deadline_policy_path=policy_path,
            secret_key=env.get("REFERRAL_SECRET_KEY") or None,
            cookie_secure=env.get("REFERRAL_INSECURE_COOKIES", "") != "1",
            metrics_token=_metrics_token(env.get("REFERRAL_METRICS_TOKEN") or None),
            trusted_proxies=_trusted_proxies(env.get("REFERRAL_TRUSTED_PROXIES") or "0"),
        )


def _check_database_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "REFERRAL_DATABASE_URL: not a database URL; expected e.g. "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() not in _DB_DRIVERS:
        raise ConfigError(
            f"REFERRAL_DATABASE_URL: unsupported database {parsed.get_backend_name()!r}; "
            "use postgresql+psycopg:// (production) or leave it unset (embedded SQLite)"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ConfigError("REFERRAL_DATABASE_URL: use the psycopg 3 driver: postgresql+psycopg://…")


METRICS_TOKEN_MIN = 32
MAX_TRUSTED_PROXIES = 10


def _metrics_token(token: str | None) -> str | None:
    if token is not None and (len(token) < METRICS_TOKEN_MIN or not token.isascii() or not token.isprintable()
                              or " " in token):
        raise ConfigError(f"REFERRAL_METRICS_TOKEN: use at least {METRICS_TOKEN_MIN} printable ASCII characters "
                          "without spaces, e.g. the output of 'openssl rand -hex 32'")
    return token


def _trusted_proxies(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_TRUSTED_PROXIES:
        raise ConfigError(f"REFERRAL_TRUSTED_PROXIES: the number of reverse proxies in front of the service, "
                          f"0 to {MAX_TRUSTED_PROXIES}; got {raw!r}")
    return int(raw)
