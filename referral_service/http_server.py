"""The HTTP servers the CLI starts: waitress for `run`, gunicorn for `serve`, with the same limits.

Both bound what an unauthenticated client can make the server hold, and neither names itself in a
`Server` header. Scheme and client address come only from `REFERRAL_TRUSTED_PROXIES` (werkzeug's
ProxyFix in `create_app`), never from a server's own reading of X-Forwarded-* headers.
"""

from __future__ import annotations

from typing import Any

from referral_service.app import MAX_BODY_BYTES

# waitress reads a whole body before it calls the app, so the app's own 413 (by Content-Length,
# JSON) comes too late to spare memory or disk. Beyond this bound waitress answers 413 itself
# (plain text) from the headers alone; up to it the body stays in memory (inbuf_overflow), never
# in a temporary file. Twice the app's limit, so every body the app refuses still gets its JSON 413.
SERVER_MAX_BODY_BYTES = 2 * MAX_BODY_BYTES

# gunicorn's sync workers never buffer a body (the app reads it, or refuses it by Content-Length
# first), so only the request line and headers need bounds; these are gunicorn's defaults, pinned.
GUNICORN_LIMITS: dict[str, Any] = {
    "limit_request_line": 4094,
    "limit_request_fields": 100,
    "limit_request_field_size": 8190,
    # gunicorn would otherwise believe X-Forwarded-Proto from loopback peers by default.
    "secure_scheme_headers": {},
    "forwarder_headers": "",
}


def waitress_server(app: Any, *, host: str, port: int, threads: int) -> Any:
    from waitress import create_server

    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="",  # no Server header
        max_request_body_size=SERVER_MAX_BODY_BYTES,
        inbuf_overflow=SERVER_MAX_BODY_BYTES,
    )


def hide_gunicorn_banner() -> None:
    """Drop the `Server: gunicorn` line gunicorn writes into every response.

    gunicorn has no setting for it (benoitc/gunicorn#825); its responses build the line in
    `Response.default_headers`, so that one method is wrapped. Idempotent; call before forking.
    """
    from gunicorn.http import wsgi

    original = wsgi.Response.default_headers
    if getattr(original, "_banner_hidden", False):
        return

    def default_headers(self: Any) -> list[str]:
        return [line for line in original(self) if not line.lower().startswith("server:")]

    default_headers._banner_hidden = True  # type: ignore[attr-defined]
    wsgi.Response.default_headers = default_headers
