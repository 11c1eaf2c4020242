"""Configuration from the environment, validated once at start-up.

Every problem is reported as one `ConfigError` line naming the variable, so the CLI can
print it and exit instead of showing a traceback to an operator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


@dataclass(frozen=True)
class SmtpRelay:
    """`smtp://host:port` (STARTTLS when the relay offers it; required to send credentials) or
    `smtps://user:pass@host:port` (TLS)."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


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
    # Web sessions end after this long without a request, and this long after sign-in whatever happens.
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    # Per-client limits (Flask-Limiter); memory:// counts per process, redis:// shares counts across hosts.
    ratelimit_enabled: bool = True
    ratelimit_storage_url: str = "memory://"
    ratelimit_login: str = "10 per minute"
    ratelimit_api_auth_failures: str = "20 per minute"
    # REFERRAL_METRICS_TOKEN: Prometheus scrapers send `Authorization: Bearer <token>` to /metrics;
    # unset, /metrics answers 404 (the counters describe traffic, failed sign-ins included).
    metrics_token: str | None = None
    # REFERRAL_TRUSTED_PROXIES: how many reverse proxies in front set X-Forwarded-For/-Proto; 0
    # (default) believes no such header, so a client cannot claim HTTPS or another address.
    trusted_proxies: int = 0
    # Partner notifications (issue 12): the SMTP relay (None: no e-mail), its sender address, whether
    # webhooks may go to loopback and private addresses, and the service's address for links.
    smtp: SmtpRelay | None = None
    smtp_from: str = "referral-service@localhost"
    webhook_allow_private: bool = False
    # REFERRAL_NOTIFY_LEASE_SECONDS / REFERRAL_NOTIFY_BATCH: a notify worker leases up to a batch of due
    # rows for this long; if it dies, they come due again when the lease ends.
    notify_lease_seconds: int = 120
    notify_batch: int = 50
    # REFERRAL_WEBHOOK_TIMEOUT_SECONDS: a receiver that has not answered by then counts as failed (retried).
    webhook_timeout_seconds: int = 10
    public_url: str = "http://127.0.0.1:8000"
    # REFERRAL_NOTIFICATION_RETENTION_DAYS: delivered notification rows are deleted after this many
    # days (parked ones after twice as long, for admins to notice and replay them).
    notification_retention_days: int = 30
    # REFERRAL_AUDIT_ORIGIN: the audit log's name, first line of every checkpoint and its key's name
    # (C2SP tlog-checkpoint: a schema-less URL naming this log, unique among the logs auditors follow).
    audit_origin: str = "referral-service.local/audit"
    # How often an idle integrator looks for new audit entries (seconds).
    audit_integrate_every: float = 1.0
    # REFERRAL_STATISTICS_THRESHOLD: counts from 1 to this less one are suppressed in the statistics.
    statistics_threshold: int = 5

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
            session_idle_minutes=_whole_number(env, "REFERRAL_SESSION_IDLE_MINUTES", 30, 1, 24 * 60),
            session_max_hours=_whole_number(env, "REFERRAL_SESSION_MAX_HOURS", 12, 1, 30 * 24),
            ratelimit_enabled=_flag(env, "REFERRAL_RATELIMIT_ENABLED", True),
            ratelimit_storage_url=_ratelimit_storage(env.get("REFERRAL_RATELIMIT_STORAGE_URL") or "memory://"),
            ratelimit_login=_rate(env, "REFERRAL_RATELIMIT_LOGIN", "10 per minute"),
            ratelimit_api_auth_failures=_rate(env, "REFERRAL_RATELIMIT_API_AUTH_FAILURES", "20 per minute"),
            metrics_token=_metrics_token(env.get("REFERRAL_METRICS_TOKEN") or None),
            trusted_proxies=_trusted_proxies(env.get("REFERRAL_TRUSTED_PROXIES") or "0"),
            smtp=_smtp(env.get("REFERRAL_SMTP_URL") or None),
            smtp_from=_smtp_from(env.get("REFERRAL_SMTP_FROM") or "referral-service@localhost"),
            webhook_allow_private=_flag(env, "REFERRAL_WEBHOOK_ALLOW_PRIVATE", False),
            notify_lease_seconds=_whole_number(env, "REFERRAL_NOTIFY_LEASE_SECONDS", 120, 2, 3600),
            notify_batch=_whole_number(env, "REFERRAL_NOTIFY_BATCH", 50, 1, 1000),
            webhook_timeout_seconds=_whole_number(env, "REFERRAL_WEBHOOK_TIMEOUT_SECONDS", 10, 1, 60),
            public_url=_public_url(env.get("REFERRAL_PUBLIC_URL") or "http://127.0.0.1:8000"),
            notification_retention_days=_whole_number(env, "REFERRAL_NOTIFICATION_RETENTION_DAYS", 30, 1, 3650),
            audit_origin=_audit_origin(env.get("REFERRAL_AUDIT_ORIGIN") or "referral-service.local/audit"),
            statistics_threshold=_whole_number(env, "REFERRAL_STATISTICS_THRESHOLD", 5, 2, 100),
        )


def _whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name}: expected a whole number from {low} to {high}, got {raw[:40]!r}")
    return int(raw)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE + _FALSE:
        raise ConfigError(f"{name}: expected 1 or 0 (true or false), got {raw[:40]!r}")
    return raw in _TRUE


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse

    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        parse(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a rate such as '10 per minute', got {raw[:40]!r}") from None
    return raw


def _ratelimit_storage(url: str) -> str:
    from limits.storage import SCHEMES

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES or scheme.startswith("async+"):
        raise ConfigError(
            "REFERRAL_RATELIMIT_STORAGE_URL: expected memory:// or redis://host:6379 (also "
            f"rediss://, redis+sentinel://, memcached://), got a URL with scheme {scheme or '(none)'!r}"
        )
    return url


def _check_database_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "REFERRAL_DATABASE_URL: not a database URL; expected e.g. postgresql+psycopg://user@host:5432/dbname"
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
    if token is not None and (
        len(token) < METRICS_TOKEN_MIN or not token.isascii() or not token.isprintable() or " " in token
    ):
        raise ConfigError(
            f"REFERRAL_METRICS_TOKEN: use at least {METRICS_TOKEN_MIN} printable ASCII characters "
            "without spaces, e.g. the output of 'openssl rand -hex 32'"
        )
    return token


def _trusted_proxies(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_TRUSTED_PROXIES:
        raise ConfigError(
            f"REFERRAL_TRUSTED_PROXIES: the number of reverse proxies in front of the service, "
            f"0 to {MAX_TRUSTED_PROXIES}; got {raw!r}"
        )
    return int(raw)


def _smtp(url: str | None) -> SmtpRelay | None:
    if url is None:
        return None
    problem = "expected smtp://host:port or smtps://user:password@host:port"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"REFERRAL_SMTP_URL: {problem}; the port is not a number") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(f"REFERRAL_SMTP_URL: {problem}; got a URL with scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ConfigError(f"REFERRAL_SMTP_URL: {problem}; the host is missing")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"REFERRAL_SMTP_URL: {problem}; nothing may follow the port")
    tls = parts.scheme == "smtps"
    return SmtpRelay(
        host=parts.hostname,
        port=port or (465 if tls else 25),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _smtp_from(address: str) -> str:
    if "@" not in address or any(c in address for c in " \r\n<>,;") or len(address) > 254:
        raise ConfigError(f"REFERRAL_SMTP_FROM: expected one e-mail address, got {address[:60]!r}")
    return address


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"REFERRAL_PUBLIC_URL: the service's address for links in notifications, e.g. "
            f"https://referrals.example.org; got {url[:60]!r}"
        )
    return url.rstrip("/")


def _audit_origin(origin: str) -> str:
    # A note key name: no spaces, no '+', printable (c2sp.org/signed-note).
    if not origin.isascii() or not origin.isprintable() or " " in origin or "+" in origin or len(origin) > 200:
        raise ConfigError(
            "REFERRAL_AUDIT_ORIGIN: the audit log's name, e.g. van.example.org/audit "
            "(printable ASCII, no spaces or '+', at most 200 characters)"
        )
    return origin
