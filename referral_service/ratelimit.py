"""Per-client rate limits (Flask-Limiter): password sign-in attempts and failed bearer-token authentications.

They slow down guessing from one address; the per-account pause in the database (services.users.sign_in)
holds whatever the address. Counts live in REFERRAL_RATELIMIT_STORAGE_URL: memory:// counts per process,
so a deployment with several workers or hosts points them all at one redis://.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.errors import ConfigurationError

from referral_service.config import ConfigError, Settings

log = logging.getLogger(__name__)
EXTENSION = "referral_limiter"


def _unauthenticated(response: Any) -> bool:
    return bool(response.status_code == 401)


def init_limiter(app: Flask, settings: Settings) -> Limiter:
    """Attach the limits to the app's sign-in view and API blueprint. App config RATELIMIT_ENABLED (e.g. from
    a test) overrides REFERRAL_RATELIMIT_ENABLED."""
    from referral_service.api import bp as api_bp

    app.config.setdefault("RATELIMIT_ENABLED", settings.ratelimit_enabled)
    # A limiter per app (not a module global): each app, and each test, counts on its own.
    limiter = Limiter(
        key_func=get_remote_address,
        storage_uri=settings.ratelimit_storage_url,
        key_prefix="referral-service",
        # If the shared store is unreachable, count in this process instead, and never fail a request on it.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    try:
        limiter.init_app(app)
    except ConfigurationError as exc:
        raise ConfigError(
            f"REFERRAL_RATELIMIT_STORAGE_URL: cannot use it ({exc}); for redis:// install the "
            "redis extra: pip install 'referral-service[redis]'"
        ) from None
    app.extensions[EXTENSION] = limiter
    # Only POSTs count: showing the form is free.
    login_view: Any = app.view_functions["web.login"]
    app.view_functions["web.login"] = limiter.limit(settings.ratelimit_login, methods=["POST"], scope="sign-in")(
        login_view
    )
    # Counted only when the answer is 401, across the whole API; once over, every API request from that
    # address gets 429 until the window ends (a valid token from elsewhere is unaffected).
    limiter.shared_limit(settings.ratelimit_api_auth_failures, scope="api-auth-failures", deduct_when=_unauthenticated)(
        api_bp
    )
    return limiter


def retry_after_seconds() -> int:
    """Seconds until the limit this request broke lets the client in again (for Retry-After)."""
    limiter: Limiter | None = current_app.extensions.get(EXTENSION)
    limit = limiter.current_limit if limiter is not None else None
    if limit is None:
        return 60
    try:
        return max(1, math.ceil(limit.window.reset_time - time.time()))
    except Exception:  # noqa: BLE001 - the store went away meanwhile; a minute is a safe answer
        log.warning("rate limit store unavailable while computing Retry-After")
        return 60
