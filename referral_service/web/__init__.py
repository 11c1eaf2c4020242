"""Server-rendered pages for people: English and Urdu, CSRF-protected forms, session sign-in."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Flask, request
from flask_babel import Babel, get_locale
from flask_wtf.csrf import CSRFProtect

from referral_service.web.i18n import LANG_NAMES, LANGS, RTL_LANGS, TRANSLATIONS_DIR, compile_catalogs, label
from referral_service.web.i18n import select_locale as _select_locale

csrf = CSRFProtect()
babel = Babel()


def _when(value: Any) -> str:
    # One unambiguous format in every language; times are stored and shown in UTC.
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


def _lang_url(code: str) -> str:
    args = {k: v for k, v in request.args.items() if k != "lang"}
    args["lang"] = code
    return f"{request.path}?{urlencode(args)}"


def init_app(app: Flask) -> None:
    from referral_service.api import bp as api_bp
    from referral_service.api.ops import ops_bp
    from referral_service.web.views import bp as web_bp
    from referral_service.web.views import current_actor

    compile_catalogs()
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS_DIR))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    babel.init_app(app, locale_selector=_select_locale)
    # The JSON API authenticates with bearer tokens, not cookies, so a forged cross-site form can't use it.
    csrf.exempt(api_bp)
    csrf.exempt(ops_bp)
    csrf.init_app(app)
    app.register_blueprint(web_bp)

    @app.context_processor
    def _page_globals() -> dict[str, Any]:
        lang = str(get_locale() or "en")
        return {
            "lang": lang,
            "text_dir": "rtl" if lang in RTL_LANGS else "ltr",
            "languages": [(code, LANG_NAMES[code]) for code in LANGS],
            "lang_url": _lang_url,
            "actor": current_actor() if request.blueprint == "web" else None,
            "label": label,
            "sep": "، " if lang in RTL_LANGS else ", ",
        }

    app.jinja_env.filters["when"] = _when
