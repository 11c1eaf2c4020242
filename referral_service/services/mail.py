"""E-mail to a partner organisation's contact address through the SMTP relay (`REFERRAL_SMTP_URL`).

The message says that a new case is waiting and links to it, in English or Urdu (the partner's
`notify_language`, from the same catalogue as the web pages). It names nothing about the person:
no name, no place, no need, no narrative; the partner signs in to see what it may see.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from functools import cache
from pathlib import Path
from typing import Any

from babel.support import NullTranslations, Translations

from referral_service.config import SmtpRelay

TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"
TIMEOUT_SECONDS = 20.0

SUBJECT = "A new case is waiting in your inbox"
BODY = (
    "A new case is waiting in your inbox.\n\n"
    "Open it here (sign in first): %(url)s\n\n"
    "Please answer the offer by %(due)s (UTC).\n\n"
    "This e-mail holds nothing about the person. Do not reply to it."
)
BODY_NO_DUE = (
    "A new case is waiting in your inbox.\n\n"
    "Open it here (sign in first): %(url)s\n\n"
    "This e-mail holds nothing about the person. Do not reply to it."
)

DIGEST_SUBJECT = "Follow-ups are overdue in your inbox"
DIGEST_BODY = (
    "%(overdue)s follow-up reminder(s) for %(cases)s case(s) became overdue since the last digest.\n\n"
    "See them in your inbox (sign in first): %(url)s\n\n"
    "This e-mail holds nothing about the people. Do not reply to it."
)


@cache
def _catalogue(language: str) -> NullTranslations:
    if language == "en":
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS_DIR), [language])


def compose(*, sender: str, to: str, language: str, url: str, due: str | None, message_id: str) -> EmailMessage:
    tr = _catalogue(language if language in ("en", "ur") else "en")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = tr.gettext(SUBJECT)
    msg["Message-ID"] = make_msgid(idstring=message_id, domain=sender.rsplit("@", 1)[-1])
    msg["Content-Language"] = language
    text = tr.gettext(BODY) % {"url": url, "due": due} if due else tr.gettext(BODY_NO_DUE) % {"url": url}
    msg.set_content(text)
    return msg


def compose_digest(
    *, sender: str, to: str, language: str, url: str, overdue: int, cases: int, message_id: str
) -> EmailMessage:
    """The daily digest of overdue follow-ups: counts and the inbox link only."""
    tr = _catalogue(language if language in ("en", "ur") else "en")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = tr.gettext(DIGEST_SUBJECT)
    msg["Message-ID"] = make_msgid(idstring=message_id, domain=sender.rsplit("@", 1)[-1])
    msg["Content-Language"] = language
    msg.set_content(tr.gettext(DIGEST_BODY) % {"overdue": overdue, "cases": cases, "url": url})
    return msg


def send(relay: SmtpRelay, message: EmailMessage, *, timeout: float = TIMEOUT_SECONDS) -> None:
    """Hand the message to the relay; raises `smtplib.SMTPException` or `OSError` on failure."""
    context = ssl.create_default_context()
    client: Any
    if relay.tls:
        client = smtplib.SMTP_SSL(relay.host, relay.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(relay.host, relay.port, timeout=timeout)
    with client:
        if not relay.tls:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            elif relay.username:
                # A relay without STARTTLS (or one whose offer was stripped on the way) would be sent
                # the password in the clear.
                raise smtplib.SMTPNotSupportedError(
                    "the relay offers no STARTTLS; its credentials are not sent unencrypted"
                )
        if relay.username:
            client.login(relay.username, relay.password or "")
        client.send_message(message)


__all__ = ["compose", "compose_digest", "send"]
