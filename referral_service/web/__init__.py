"""Server-rendered pages for people (filled in by the web-forms work)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    return None
